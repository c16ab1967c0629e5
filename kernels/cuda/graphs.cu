/* Step graphs (CUDA graphs) of the CUDA backend: the arena of a graph's
 * index arrays (put_graph) and the graph_begin / graph_end ops. The
 * operand signature every op folds into and the GRAPH_* macros are in
 * common.cuh. */
#include "kernels/cuda/common.cuh"

/* put_index inside a step graph: recording lays the bytes out in the
 * arena; replaying writes them where the recording put them and checks the
 * layout is the same (else the step runs op by op). */
vd_status put_graph(cu_ctx *c, int kind, size_t bytes, const char **dev)
{
	cu_graph *g = &c->graphs[c->gid];

	*dev = c->ga_d;
	if (c->gmode == GM_REPLAY) {
		const g_slot *sl;

		if (c->gpos >= g->nslots) {
			c->gfail = true;
			return VD_OK;
		}
		sl = &g->slots[c->gpos++];
		if (sl->kind != kind || sl->bytes != bytes)
			c->gfail = true;
		else if (sl->same_as >= 0 ? memcmp(c->ga_h + sl->off, c->blob, bytes) != 0 : false)
			c->gfail = true;
		else if (sl->same_as < 0)
			memcpy(c->ga_h + sl->off, c->blob, bytes);
		*dev = c->ga_d + sl->off;
		return VD_OK;
	}
	{
		int prev = c->glast[kind];
		g_slot sl = { kind, -1, 0, bytes };

		if (g->nslots == g->cap) {
			int cap = g->cap ? 2 * g->cap : 64;
			g_slot *n = (g_slot *)realloc(g->slots, sizeof(g_slot) * (size_t)cap);

			if (!n) {
				c->gfail = true;
				return vd_errorf(VD_ERR_NOMEM, "cuda backend: out of host memory");
			}
			g->slots = n;
			g->cap = cap;
		}
		if (prev >= 0 && g->slots[prev].bytes == bytes &&
		    memcmp(c->ga_h + g->slots[prev].off, c->blob, bytes) == 0) {
			sl.same_as = prev;
			sl.off = g->slots[prev].off;
		} else {
			sl.off = align_up(c->gused, 256);
			if (sl.off + bytes > G_ARENA) {
				c->gfail = true;
				return vd_errorf(VD_ERR_LIMIT, "cuda graph: a step's index arrays exceed %u MiB",
						 G_ARENA >> 20);
			}
			memcpy(c->ga_h + sl.off, c->blob, bytes);
			c->gused = sl.off + bytes;
			c->glast[kind] = g->nslots;
		}
		g->slots[g->nslots++] = sl;
		*dev = c->ga_d + sl.off;
	}
	return VD_OK;
}

vd_status cu_graph_begin(vd_backend *be, int id)
{
	ENTER(be);
	cu_graph *g;

	if (id < 0 || id >= G_MAX)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda graph_begin: id %d outside [0, %d)", id,
				 G_MAX);
	if (c->gmode)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda graph_begin: graph %d is still open",
				 c->gid);
	g = &c->graphs[id];
	if (g->broken || c->prof || c->debug_sync || env_on("VD_CUDA_GRAPHS_OFF"))
		return vd_errorf(VD_ERR_UNSUPPORTED, "cuda graph_begin: graphs are off here");
	if (!c->ga_h) {
		CUDA_TRY(cudaHostAlloc((void **)&c->ga_h, G_ARENA, cudaHostAllocDefault));
		CUDA_TRY(cudaMalloc((void **)&c->ga_d, G_ARENA));
		CUDA_TRY(cudaEventCreateWithFlags(&c->ga_ev, cudaEventDisableTiming));
	}
	/* the host arena is rewritten now: its last upload must be done */
	if (c->ga_ev_set)
		CUDA_TRY(cudaEventSynchronize(c->ga_ev));
	c->gid = id;
	c->gpos = 0;
	c->gfail = false;
	c->gsig = 0xcbf29ce484222325ull;
	c->gused = 0;
	for (int k = 0; k < IDX_COUNT; k++)
		c->glast[k] = -1;
	if (g->made) {
		c->gmode = GM_REPLAY;
		return VD_OK;
	}
	g->nslots = 0;
	CUDA_TRY(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed));
	c->gmode = GM_CAPTURE;
	return VD_OK;
}

vd_status cu_graph_end(vd_backend *be, int *ran)
{
	ENTER(be);
	int mode = c->gmode;
	cu_graph *g = &c->graphs[c->gid];

	if (!ran)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda graph_end: ran is NULL");
	*ran = 0;
	if (!mode)
		return vd_errorf(VD_ERR_INVALID_ARG, "cuda graph_end: no graph is open");
	c->gmode = GM_OFF;
	if (mode == GM_CAPTURE) {
		cudaGraph_t graph = NULL;
		cudaError_t e = cudaStreamEndCapture(c->stream, &graph);

		if (e == cudaSuccess && !c->gfail && graph)
			e = cudaGraphInstantiate(&g->exec, graph, 0);
		if (graph)
			cudaGraphDestroy(graph);
		if (e != cudaSuccess || c->gfail || !graph) {
			cudaGetLastError();
			g->broken = true;
			return VD_OK;
		}
		g->made = true;
		g->sig = c->gsig;
		g->used = c->gused;
		c->n_made++;
	} else if (c->gfail || c->gpos != g->nslots || c->gsig != g->sig) {
		/* the step no longer matches the recording (a buffer it uses was
		 * reallocated, say): record it again next time, a few times at most */
		cudaGraphExecDestroy(g->exec);
		g->made = false;
		c->n_made--;
		if (++g->redone > 4)
			g->broken = true;
		return VD_OK;
	}
	if (g->used > 0) {
		CUDA_TRY(cudaMemcpyAsync(c->ga_d, c->ga_h, g->used, cudaMemcpyHostToDevice, c->stream));
		CUDA_TRY(cudaEventRecord(c->ga_ev, c->stream));
		c->ga_ev_set = true;
	}
	CUDA_TRY(cudaGraphLaunch(g->exec, c->stream));
	*ran = 1;
	return op_done(c, "graph");
}
