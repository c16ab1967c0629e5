/* Times CUDA ops at LLaVA-1.5-7B decode shapes (bf16): the linears of one
 * layer and the lm_head, paged attention over long contexts, rmsnorm.
 * Prints microseconds per call and the bandwidth implied by the bytes each
 * call must read (weights, KV cache), to compare with the card's ~4 TB/s.
 * Usage: ops_cuda_bench [iterations]. Needs a CUDA device. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda_backend.h"
#include "vllmd/ops.h"

static vd_backend *be;

#define CHECK(call)                                                                      \
	do {                                                                             \
		vd_status s_ = (call);                                                   \
		if (s_ != VD_OK) {                                                       \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__,           \
				vd_status_str(s_), vd_error_message());                  \
			exit(1);                                                         \
		}                                                                        \
	} while (0)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static vd_tensor rand_tensor(int ndim, const int64_t *shape)
{
	vd_tensor t;
	int64_t n = 1;
	float *h;

	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	h = malloc(sizeof(float) * (size_t)n);
	if (!h)
		exit(1);
	for (int64_t i = 0; i < n; i++)
		h[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
	CHECK(be->ops->alloc(be, &t, VD_DTYPE_BF16, ndim, shape));
	CHECK(be->ops->upload(be, &t, h, VD_DTYPE_F32, n));
	free(h);
	return t;
}

static vd_tensor rand2(int64_t a, int64_t b)
{
	int64_t s[2] = { a, b };

	return rand_tensor(2, s);
}

static void report(const char *what, double sec, int iters, double bytes)
{
	double us = sec / iters * 1e6;

	printf("%-44s %9.1f us  %7.0f GB/s\n", what, us, bytes / (us * 1e-6) / 1e9);
}

static void bench_linear(const char *name, int64_t M, int64_t K, int64_t N, int iters)
{
	vd_tensor x = rand2(M, K), w = rand2(N, K), y = rand2(M, N);
	char what[64];
	double t0;

	CHECK(be->ops->linear(be, &x, &w, NULL, &y));
	CHECK(be->ops->sync(be));
	t0 = now();
	for (int i = 0; i < iters; i++)
		CHECK(be->ops->linear(be, &x, &w, NULL, &y));
	CHECK(be->ops->sync(be));
	snprintf(what, sizeof(what), "linear %s M=%lld", name, (long long)M);
	report(what, now() - t0, iters, 2.0 * (double)(N * K + M * K + M * N));
	be->ops->free(be, &x);
	be->ops->free(be, &w);
	be->ops->free(be, &y);
}

/* batch sequences decoding one token each with ctx cached tokens. */
static void bench_attention(int batch, int ctx, int iters)
{
	int64_t H = 32, D = 128, bs = 16, nblk = (ctx + bs - 1) / bs;
	int64_t cshape[4] = { batch * nblk, bs, H, D }, qshape[3] = { batch, H, D };
	vd_tensor kc = rand_tensor(4, cshape), vc = rand_tensor(4, cshape);
	vd_tensor q = rand_tensor(3, qshape), o = rand_tensor(3, qshape);
	int32_t *qsl = malloc(sizeof(int32_t) * (size_t)(batch + 1));
	int32_t *lens = malloc(sizeof(int32_t) * (size_t)batch);
	int32_t *tables = malloc(sizeof(int32_t) * (size_t)(batch * nblk));
	vd_attn_meta m;
	char what[64];
	double t0;

	if (!qsl || !lens || !tables)
		exit(1);
	for (int s = 0; s <= batch; s++)
		qsl[s] = s;
	for (int s = 0; s < batch; s++)
		lens[s] = ctx;
	for (int64_t i = 0; i < batch * nblk; i++)
		tables[i] = (int32_t)((i * 7919) % (batch * nblk)); /* scattered blocks */
	m = (vd_attn_meta){ batch, batch, qsl, lens, tables, (int)nblk, (int)bs, NULL };
	CHECK(be->ops->paged_attention(be, &q, &kc, &vc, &m, 0.088f, &o));
	CHECK(be->ops->sync(be));
	t0 = now();
	for (int i = 0; i < iters; i++)
		CHECK(be->ops->paged_attention(be, &q, &kc, &vc, &m, 0.088f, &o));
	CHECK(be->ops->sync(be));
	snprintf(what, sizeof(what), "paged_attention decode batch %d ctx %d", batch, ctx);
	report(what, now() - t0, iters, 2.0 * 2.0 * (double)batch * ctx * H * D);
	be->ops->free(be, &kc);
	be->ops->free(be, &vc);
	be->ops->free(be, &q);
	be->ops->free(be, &o);
	free(qsl);
	free(lens);
	free(tables);
}

static void bench_rmsnorm(int64_t M, int iters)
{
	vd_tensor x = rand2(M, 4096), r = rand2(M, 4096), y = rand2(M, 4096);
	int64_t n = 4096;
	vd_tensor w = rand_tensor(1, &n);
	char what[64];
	double t0;

	CHECK(be->ops->sync(be));
	t0 = now();
	for (int i = 0; i < iters; i++)
		CHECK(be->ops->add_rmsnorm(be, &r, &x, &w, 1e-6f, &y));
	CHECK(be->ops->sync(be));
	snprintf(what, sizeof(what), "add_rmsnorm (%lld, 4096)", (long long)M);
	report(what, now() - t0, iters, 2.0 * 4.0 * (double)(M * 4096));
	be->ops->free(be, &x);
	be->ops->free(be, &r);
	be->ops->free(be, &y);
	be->ops->free(be, &w);
}

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 200;

	if (vd_cuda_device_count() <= 0) {
		printf("SKIP: no CUDA device\n");
		return 77;
	}
	CHECK(vd_cuda_backend_create(0, &be));
	for (int64_t M = 1; M <= 32; M = M == 1 ? 8 : 4 * M) {
		bench_linear("qkv 4096->12288", M, 4096, 12288, iters);
		bench_linear("o 4096->4096", M, 4096, 4096, iters);
		bench_linear("gate_up 4096->22016", M, 4096, 22016, iters);
		bench_linear("down 11008->4096", M, 11008, 4096, iters);
		bench_linear("lm_head 4096->32064", M, 4096, 32064, iters);
	}
	bench_attention(1, 2048, iters);
	bench_attention(1, 8192, iters);
	bench_attention(32, 1024, iters);
	bench_attention(64, 2048, iters);
	bench_attention(256, 700, iters / 5 > 0 ? iters / 5 : 1);
	bench_rmsnorm(1, iters);
	bench_rmsnorm(32, iters);
	vd_cuda_backend_destroy(be);
	return 0;
}
