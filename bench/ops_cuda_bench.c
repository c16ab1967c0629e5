/* Times CUDA ops at LLaVA-1.5-7B decode shapes (bf16): the linears of one
 * layer and the lm_head, paged attention over long contexts, rmsnorm; the
 * sampler (sample_full: greedy, a plain draw, top_p with its sort, and
 * logprobs) at LLaVA's and Qwen2-VL's vocabularies; CLIP's patch
 * convolution through cuDNN against im2patch and linear.
 * Prints microseconds per call and the bandwidth implied by the bytes each
 * call must read (weights, KV cache), to compare with the card's ~4 TB/s.
 * Usage: ops_cuda_bench [iterations]. Needs a CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda_backend.h"
#include "vllmd/ops.h"

static vd_backend *be;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

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
	/* uniform in [-1, 1) from xorshift64: random bits, as trained weights
	 * and activations have (a short repeating pattern toggles fewer bits
	 * and lets the GPU hold higher clocks than real work does) */
	for (int64_t i = 0; i < n; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		h[i] = (float)(rng >> 40) * 0x1.0p-23f - 1.0f;
	}
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
	m = (vd_attn_meta){ batch, batch, qsl, lens, tables, (int)nblk, (int)bs, NULL, 1.0f, 1.0f };
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

/* A large GEMM with bias, as the vision towers run them: TFLOP/s in the
 * last column (the matrix units' rate, not bandwidth). */
static void bench_gemm(const char *name, int64_t M, int64_t K, int64_t N, int iters)
{
	vd_tensor x = rand2(M, K), w = rand2(N, K), y = rand2(M, N);
	vd_tensor b = rand_tensor(1, &N);
	char what[80];
	double t0;

	CHECK(be->ops->linear(be, &x, &w, &b, &y));
	CHECK(be->ops->sync(be));
	t0 = now();
	for (int i = 0; i < iters; i++)
		CHECK(be->ops->linear(be, &x, &w, &b, &y));
	CHECK(be->ops->sync(be));
	snprintf(what, sizeof(what), "gemm %s (column: TFLOP/s)", name);
	report(what, now() - t0, iters, 2.0 * (double)M * (double)N * (double)K * 1e-3);
	be->ops->free(be, &x);
	be->ops->free(be, &w);
	be->ops->free(be, &y);
	be->ops->free(be, &b);
}

/* sample_full over M rows of V f32 logits: what a step's sampling costs. */
static void bench_sample(int64_t M, int64_t V, const char *mode, int iters)
{
	int64_t shape[2] = { M, V };
	vd_tensor x;
	float *h = malloc(sizeof(float) * (size_t)(M * V));
	vd_sample_row *rows = calloc((size_t)M, sizeof(*rows));
	int32_t *picks = malloc(sizeof(int32_t) * (size_t)M), *rank = malloc(sizeof(int32_t) * (size_t)M);
	int32_t *ids = malloc(sizeof(int32_t) * (size_t)M * 5);
	float *lp = malloc(sizeof(float) * (size_t)M), *lps = malloc(sizeof(float) * (size_t)M * 5);
	vd_sample_args a = { .struct_size = sizeof(a), .rows = rows, .lp_k = 5, .picks = picks,
			     .chosen_lp = lp, .chosen_rank = rank, .top_ids = ids, .top_lps = lps };
	char what[80];
	double t0;

	if (!h || !rows || !picks || !rank || !ids || !lp || !lps)
		exit(1);
	for (int64_t i = 0; i < M * V; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		h[i] = (float)(rng >> 40) * 0x1.0p-23f * 5.0f - 5.0f;
	}
	for (int64_t m = 0; m < M; m++)
		rows[m] = (vd_sample_row){ .temperature = strcmp(mode, "greedy") ? 0.8f : 0.0f,
					   .top_p = strcmp(mode, "top_p 0.9") ? 0.0f : 0.9f,
					   .min_p_log = -INFINITY, .repetition_penalty = 1.0f,
					   .logprobs = strcmp(mode, "logprobs 5") ? -1 : 5,
					   .key = (uint64_t)m + 1 };
	CHECK(be->ops->alloc(be, &x, VD_DTYPE_F32, 2, shape));
	CHECK(be->ops->upload(be, &x, h, VD_DTYPE_F32, M * V));
	CHECK(be->ops->sample_full(be, &x, &a));
	t0 = now();
	for (int i = 0; i < iters; i++)
		CHECK(be->ops->sample_full(be, &x, &a));
	snprintf(what, sizeof(what), "sample_full %s (%lld, %lld)", mode, (long long)M,
		 (long long)V);
	report(what, now() - t0, iters, 4.0 * (double)(M * V));
	be->ops->free(be, &x);
	free(h);
	free(rows);
	free(picks);
	free(rank);
	free(ids);
	free(lp);
	free(lps);
}

/* CLIP ViT-L/14-336's patch embedding for n images: patch_conv (cuDNN)
 * and im2patch + linear. */
static void bench_patch(int n, int iters)
{
	int64_t ishape[4] = { n, 3, 336, 336 }, pshape[2] = { (int64_t)n * 576, 588 };
	vd_tensor img = rand_tensor(4, ishape), w = rand2(1024, 588), y = rand2((int64_t)n * 576, 1024);
	vd_tensor pt = rand_tensor(2, pshape);
	char what[80];
	double t0, flops = 2.0 * n * 576 * 588 * 1024;
	vd_status st;

	st = be->ops->patch_conv(be, &img, 2, (const int64_t[]){ 3, 336, 336 },
				 (const int64_t[]){ 14, 14 }, &w, &y);
	printf("patch_conv: %s (%s)\n", st == VD_OK ? "ok" : vd_error_message(),
	       vd_cuda_patch_conv_path(be) ? vd_cuda_patch_conv_path(be) : "-");
	if (st == VD_OK) {
		CHECK(be->ops->sync(be));
		t0 = now();
		for (int i = 0; i < iters; i++)
			CHECK(be->ops->patch_conv(be, &img, 2, (const int64_t[]){ 3, 336, 336 },
						  (const int64_t[]){ 14, 14 }, &w, &y));
		CHECK(be->ops->sync(be));
		snprintf(what, sizeof(what), "patch_conv cuDNN %d x 336/14 (column: TFLOP/s)", n);
		report(what, now() - t0, iters, flops * 1e-3);
	}
	CHECK(be->ops->sync(be));
	t0 = now();
	for (int i = 0; i < iters; i++) {
		for (int k = 0; k < n; k++) {
			vd_tensor im = vd_tensor_rows(&img, k, 1), pr = vd_tensor_rows(&pt, k * 576, 576);

			im.ndim = 3;
			memmove(im.shape, im.shape + 1, 3 * sizeof(int64_t));
			memmove(im.stride, im.stride + 1, 3 * sizeof(int64_t));
			CHECK(be->ops->im2patch(be, &im, 14, &pr));
		}
		CHECK(be->ops->linear(be, &pt, &w, NULL, &y));
	}
	CHECK(be->ops->sync(be));
	snprintf(what, sizeof(what), "im2patch+linear %d x 336/14 (column: TFLOP/s)", n);
	report(what, now() - t0, iters, flops * 1e-3);
	be->ops->free(be, &img);
	be->ops->free(be, &w);
	be->ops->free(be, &y);
	be->ops->free(be, &pt);
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
	{
		static const char *const modes[] = { "greedy", "draw", "top_p 0.9", "logprobs 5" };

		for (int v = 0; v < 2; v++)
			for (int m = 0; m < 4; m++) {
				bench_sample(1, v ? 151936 : 32064, modes[m], iters / 4 + 1);
				bench_sample(256, v ? 151936 : 32064, modes[m], iters / 20 + 1);
			}
	}
	bench_patch(64, iters / 20 + 1);
	/* CLIP ViT-L/14-336 at 64 images (36,928 rows), and a square one */
	bench_gemm("clip qkv 36928x1024->3072", 36928, 1024, 3072, iters / 10 + 1);
	bench_gemm("clip o 36928x1024->1024", 36928, 1024, 1024, iters / 10 + 1);
	bench_gemm("clip fc1 36928x1024->4096", 36928, 1024, 4096, iters / 10 + 1);
	bench_gemm("clip fc2 36928x4096->1024", 36928, 4096, 1024, iters / 10 + 1);
	bench_gemm("square 8192^3", 8192, 8192, 8192, iters / 10 + 1);
	vd_cuda_backend_destroy(be);
	return 0;
}
