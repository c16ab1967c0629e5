/* The shared model blocks (models/decoder.c, models/clip.c) on the CPU
 * backend against an independent numpy reference: tests/ref/numpy_models.py
 * writes tiny random checkpoints in the hub layout and full-sequence
 * expected outputs. The decoder runs two sequences through the paged cache
 * in flattened batches (prefill, chunked prefill, decode steps in changing
 * order) and must match the reference logits of every position; CLIP must
 * match the hidden states after 0, 2 and 3 layers. Also the HF config
 * parsing (class defaults, rope_scaling v4 and rope_parameters v5). */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cpu/cpu_backend.h"
#include "vllmd/json.h"
#include "vllmd/models.h"
#include "vllmd/weights.h"

static char ref_dir[PATH_MAX];       /* reference data, made once per run */
static char ref_error[4 * PATH_MAX]; /* why the reference data is missing */

/* ------------------------------------------------------- reference data */

static const char *ref_script(void)
{
	static char buf[PATH_MAX];
	const char *dirs[2] = { getenv("VD_SRCDIR"), getenv("srcdir") };

	for (int i = 0; i < 2; i++) {
		if (!dirs[i])
			continue;
		snprintf(buf, sizeof(buf), "%s/tests/ref/numpy_models.py", dirs[i]);
		if (access(buf, R_OK) == 0)
			return buf;
	}
	return "tests/ref/numpy_models.py";
}

static void ref_setup(void)
{
	char cmd[3 * PATH_MAX], line[512];
	FILE *p;
	int rc;

	snprintf(ref_dir, sizeof(ref_dir), "%s/vd_test_models.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(ref_dir)) {
		snprintf(ref_error, sizeof(ref_error), "mkdtemp %s: %s", ref_dir, strerror(errno));
		ref_dir[0] = '\0';
		return;
	}
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s' '%s' 2>&1", ref_script(), ref_dir);
	p = popen(cmd, "r");
	if (!p) {
		snprintf(ref_error, sizeof(ref_error), "popen %s: %s", cmd, strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), p))
		fputs(line, stderr);
	rc = pclose(p);
	if (rc != 0)
		snprintf(ref_error, sizeof(ref_error),
			 "%s failed (status %d): needs /usr/bin/python3 with numpy", cmd, rc);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void ref_teardown(void)
{
	if (ref_dir[0])
		nftw(ref_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void require_ref(void)
{
	ck_assert_msg(ref_error[0] == '\0', "no reference data: %s", ref_error);
}

static const char *ref_path(const char *sub, const char *name)
{
	static char buf[2 * PATH_MAX + 64];

	snprintf(buf, sizeof(buf), "%s/%s/%s", ref_dir, sub, name);
	return buf;
}

/* A host tensor from an expected.safetensors file, with its dtype checked. */
static vd_tensor expect(const vd_weights *w, const char *name, vd_dtype dt)
{
	vd_tensor t;
	vd_status st = vd_weights_get(w, name, &t);

	ck_assert_msg(st == VD_OK, "expected tensor %s: %s", name, vd_error_message());
	ck_assert_int_eq(t.dtype, dt);
	return t;
}

/* ----------------------------------------------------- decoder harness */

enum { NSEQ = 2, BS = 4, NBLK = 16, MAXB = 4, MAXT = 32 };

/* Non-contiguous, interleaved blocks for the two sequences. */
static const int32_t blocks[NSEQ][MAXB] = { { 5, 2, 9, 14 }, { 0, 7, 3, 12 } };

typedef struct dec_case {
	vd_backend *be;
	vd_weights *w, *exp;
	vd_json *cfg;
	vd_decoder_spec spec;
	vd_decoder *d;
	vd_tensor kc[8], vc[8];
	int P;                 /* rows of positions */
	int L[NSEQ];           /* tokens of each sequence */
	const int32_t *ids[NSEQ], *pos[NSEQ], *table[NSEQ];
	const float *logits[NSEQ];
	vd_tensor img[NSEQ];   /* image embeddings, when the case has them */
	const int32_t *img_rows[NSEQ];
	int n_img[NSEQ];
	double worst;          /* largest |logit - reference| seen */
} dec_case;

static void open_case(dec_case *c, const char *name, int threads)
{
	const char *model_type;
	bool tied;
	char key[32];

	require_ref();
	memset(c, 0, sizeof(*c));
	ck_assert_int_eq(vd_cpu_backend_create(threads, &c->be), VD_OK);
	ck_assert_msg(vd_json_load_file(ref_path(name, "config.json"), &c->cfg) == VD_OK, "%s",
		      vd_error_message());
	ck_assert_msg(vd_weights_open_file(ref_path(name, "model.safetensors"), &c->w) == VD_OK,
		      "%s", vd_error_message());
	ck_assert_msg(vd_weights_open_file(ref_path(name, "expected.safetensors"), &c->exp) == VD_OK,
		      "%s", vd_error_message());
	ck_assert_int_eq(vd_json_str(c->cfg, "model_type", NULL, &model_type), VD_OK);
	ck_assert_msg(vd_decoder_spec_from_hf(c->cfg, model_type, &c->spec) == VD_OK, "%s",
		      vd_error_message());
	ck_assert_int_eq(vd_json_bool(c->cfg, "tie_word_embeddings", false, &tied), VD_OK);
	snprintf(c->spec.prefix, sizeof(c->spec.prefix), "model.");
	if (!tied)
		snprintf(c->spec.lm_head, sizeof(c->spec.lm_head), "lm_head.weight");
	ck_assert_msg(vd_decoder_create(c->be, c->w, &c->spec, &c->d) == VD_OK, "%s",
		      vd_error_message());
	ck_assert_int_le(c->spec.num_layers, 8);
	for (int l = 0; l < c->spec.num_layers; l++) {
		int64_t shape[4] = { NBLK, BS, c->spec.num_kv_heads, c->spec.head_dim };

		ck_assert_int_eq(c->be->ops->alloc(c->be, &c->kc[l], VD_DTYPE_F32, 4, shape), VD_OK);
		ck_assert_int_eq(c->be->ops->alloc(c->be, &c->vc[l], VD_DTYPE_F32, 4, shape), VD_OK);
	}
	for (int s = 0; s < NSEQ; s++) {
		vd_tensor t;

		snprintf(key, sizeof(key), "ids%d", s);
		t = expect(c->exp, key, VD_DTYPE_I32);
		c->ids[s] = t.data;
		c->L[s] = (int)t.shape[0];
		ck_assert_int_le(c->L[s], MAXB * BS);
		snprintf(key, sizeof(key), "pos%d", s);
		t = expect(c->exp, key, VD_DTYPE_I32);
		c->pos[s] = t.data;
		c->P = (int)t.shape[0];
		snprintf(key, sizeof(key), "table%d", s);
		c->table[s] = expect(c->exp, key, VD_DTYPE_I32).data;
		snprintf(key, sizeof(key), "logits%d", s);
		t = expect(c->exp, key, VD_DTYPE_F32);
		ck_assert_int_eq(t.shape[1], c->spec.vocab_size);
		c->logits[s] = t.data;
		snprintf(key, sizeof(key), "img%d", s);
		if (vd_weights_has(c->exp, key)) {
			vd_tensor host = expect(c->exp, key, VD_DTYPE_F32);

			ck_assert_int_eq(c->be->ops->alloc(c->be, &c->img[s], VD_DTYPE_F32, 2,
							   host.shape), VD_OK);
			ck_assert_int_eq(c->be->ops->upload(c->be, &c->img[s], host.data, VD_DTYPE_F32,
							    vd_tensor_numel(&host)), VD_OK);
			snprintf(key, sizeof(key), "img_rows%d", s);
			t = expect(c->exp, key, VD_DTYPE_I32);
			c->img_rows[s] = t.data;
			c->n_img[s] = (int)t.shape[0];
		}
	}
}

static void close_case(dec_case *c)
{
	for (int s = 0; s < NSEQ; s++)
		c->be->ops->free(c->be, &c->img[s]);
	for (int l = 0; l < c->spec.num_layers; l++) {
		c->be->ops->free(c->be, &c->kc[l]);
		c->be->ops->free(c->be, &c->vc[l]);
	}
	vd_decoder_destroy(c->d);
	vd_weights_close(c->exp);
	vd_weights_close(c->w);
	vd_json_free(c->cfg);
	vd_cpu_backend_destroy(c->be);
}

/* A run of `count` tokens of sequence `seq` from position `start`. */
typedef struct chunk {
	int seq, start, count;
} chunk;

/* One engine step: embed the chunks' tokens (image rows replaced by their
 * embeddings), run the decoder with logits for logit_rows (NULL: every
 * row), and compare them with the reference rows. */
static void run_step(dec_case *c, const chunk *ch, int nch, const int32_t *logit_rows,
		     int n_logits)
{
	const vd_ops *o = c->be->ops;
	int32_t ids[MAXT], pos[3 * MAXT], table[MAXT], qsl[NSEQ + 1], lens[NSEQ];
	int32_t tables[NSEQ * MAXB], all[MAXT], tok_seq[MAXT], tok_p[MAXT];
	int64_t slots[MAXT], shape[2];
	int T = 0;
	vd_tensor x, logits;
	vd_attn_meta m;
	vd_status st;

	for (int i = 0; i < nch; i++)
		T += ch[i].count;
	ck_assert_int_le(T, MAXT);
	qsl[0] = 0;
	for (int i = 0, t = 0; i < nch; i++) {
		int s = ch[i].seq;

		for (int j = 0; j < ch[i].count; j++, t++) {
			int p = ch[i].start + j;

			ids[t] = c->ids[s][p];
			for (int r = 0; r < c->P; r++)
				pos[r * T + t] = c->pos[s][r * c->L[s] + p];
			table[t] = c->table[s][p];
			slots[t] = (int64_t)blocks[s][p / BS] * BS + p % BS;
			tok_seq[t] = s;
			tok_p[t] = p;
			all[t] = t;
		}
		qsl[i + 1] = t;
		lens[i] = ch[i].start + ch[i].count;
		memcpy(tables + i * MAXB, blocks[s], sizeof(blocks[s]));
	}
	m = (vd_attn_meta){ nch, T, qsl, lens, tables, MAXB, BS, slots, 1.0f, 1.0f };
	shape[0] = T;
	shape[1] = c->spec.hidden_size;
	ck_assert_int_eq(o->alloc(c->be, &x, VD_DTYPE_F32, 2, shape), VD_OK);
	ck_assert_int_eq(vd_decoder_embed(c->d, ids, T, &x), VD_OK);
	for (int t = 0; t < T; t++) {
		int s = tok_seq[t];

		for (int k = 0; k < c->n_img[s]; k++) {
			if (c->img_rows[s][k] != tok_p[t])
				continue;
			vd_tensor row = vd_tensor_rows(&c->img[s], k, 1);
			int32_t dst = t;

			ck_assert_int_eq(o->scatter_rows(c->be, &row, &dst, 1, &x), VD_OK);
		}
	}
	if (!logit_rows) {
		logit_rows = all;
		n_logits = T;
	}
	shape[0] = n_logits;
	shape[1] = c->spec.vocab_size;
	ck_assert_int_eq(o->alloc(c->be, &logits, VD_DTYPE_F32, 2, shape), VD_OK);
	st = vd_decoder_forward(c->d, &x, pos, table, &m, c->kc, c->vc, logit_rows, n_logits,
				&logits);
	ck_assert_msg(st == VD_OK, "forward: %s", vd_error_message());
	for (int i = 0; i < n_logits; i++) {
		int t = logit_rows[i], s = tok_seq[t], p = tok_p[t];
		const float *got = (const float *)logits.data + (int64_t)i * c->spec.vocab_size;
		const float *want = c->logits[s] + (int64_t)p * c->spec.vocab_size;

		for (int v = 0; v < c->spec.vocab_size; v++) {
			double d = fabs((double)got[v] - want[v]);

			if (d > c->worst)
				c->worst = d;
			ck_assert_msg(d < 1e-4, "seq %d pos %d logit %d: got %.7f want %.7f", s, p, v,
				      got[v], want[v]);
		}
	}
	o->free(c->be, &logits);
	o->free(c->be, &x);
}

/* Prefill all of sequence 0's prompt and a first chunk of sequence 1's,
 * finish sequence 1's prompt next to sequence 0's first decode (logits for
 * two rows, out of order), then decode both, then sequence 1 alone. The
 * last 3 tokens of each sequence are its decode steps. */
static void run_case(const char *name, int threads)
{
	dec_case c;
	int P0, P1;

	open_case(&c, name, threads);
	P0 = c.L[0] - 3;
	P1 = c.L[1] - 3;
	ck_assert_int_gt(P1, 6);
	{
		chunk s1[2] = { { 0, 0, P0 }, { 1, 0, 6 } };

		run_step(&c, s1, 2, NULL, 0);
	}
	{
		chunk s2[2] = { { 1, 6, P1 - 6 }, { 0, P0, 1 } };
		int32_t rows[2] = { P1 - 6, P1 - 7 };

		run_step(&c, s2, 2, rows, 2);
	}
	for (int k = 1; k < 3; k++) {
		chunk s3[2] = { { 0, P0 + k, 1 }, { 1, P1 + k - 1, 1 } };

		run_step(&c, s3, 2, NULL, 0);
	}
	{
		chunk s4[1] = { { 1, P1 + 2, 1 } };

		run_step(&c, s4, 1, NULL, 0);
	}
	ck_assert(c.worst < 1e-4);
	close_case(&c);
}

START_TEST(test_llama_paged)
{
	run_case("llama", 3);
}
END_TEST

START_TEST(test_phi3_longrope)
{
	run_case("phi3", 2);
}
END_TEST

START_TEST(test_qwen2vl_mrope)
{
	run_case("qwen2vl", 1);
}
END_TEST

START_TEST(test_decoder_spec_from_ref)
{
	dec_case c;
	const vd_decoder_spec *s;

	open_case(&c, "phi3", 1);
	s = vd_decoder_get_spec(c.d);
	ck_assert(s->fused_qkv && s->fused_gate_up && !s->qkv_bias);
	ck_assert_int_eq(s->rope_type, VD_ROPE_LONGROPE);
	ck_assert_int_eq(s->n_rope_factors, 4);
	ck_assert_int_eq(s->original_max_position_embeddings, 8);
	ck_assert_int_eq(s->num_kv_heads, 4); /* phi3 default: kv heads = heads */
	ck_assert(s->short_factor[1] == 1.25f && s->long_factor[3] == 8.0f);
	close_case(&c);
	open_case(&c, "qwen2vl", 1);
	s = vd_decoder_get_spec(c.d);
	ck_assert_int_eq(s->rope_type, VD_ROPE_MROPE);
	ck_assert(s->qkv_bias && !s->fused_qkv);
	ck_assert_int_eq(s->mrope_section[1], 3);
	ck_assert(s->rope_theta == 10.0);
	ck_assert_str_eq(s->lm_head, "");
	close_case(&c);
}
END_TEST

/* ------------------------------------------------------- config parsing */

static vd_status spec_of(const char *json, const char *type, vd_decoder_spec *s)
{
	vd_json *j;
	vd_status st;

	ck_assert_int_eq(vd_json_parse(json, strlen(json), &j), VD_OK);
	st = vd_decoder_spec_from_hf(j, type, s);
	vd_json_free(j);
	return st;
}

START_TEST(test_spec_defaults)
{
	vd_decoder_spec s;

	ck_assert_int_eq(spec_of("{}", "llama", &s), VD_OK);
	ck_assert_int_eq(s.struct_size, sizeof(s));
	ck_assert_int_eq(s.vocab_size, 32000);
	ck_assert_int_eq(s.hidden_size, 4096);
	ck_assert_int_eq(s.intermediate_size, 11008);
	ck_assert_int_eq(s.num_layers, 32);
	ck_assert_int_eq(s.num_heads, 32);
	ck_assert_int_eq(s.num_kv_heads, 32);
	ck_assert_int_eq(s.head_dim, 128);
	ck_assert(s.rms_norm_eps == 1e-6f);
	ck_assert_int_eq(s.max_position_embeddings, 2048);
	ck_assert(s.rope_theta == 10000.0 && s.partial_rotary_factor == 1.0f);
	ck_assert(!s.qkv_bias && !s.fused_qkv && !s.fused_gate_up);
	ck_assert_int_eq(s.rope_type, VD_ROPE_DEFAULT);

	ck_assert_int_eq(spec_of("{}", "phi3", &s), VD_OK);
	ck_assert_int_eq(s.vocab_size, 32064);
	ck_assert_int_eq(s.hidden_size, 3072);
	ck_assert_int_eq(s.intermediate_size, 8192);
	ck_assert_int_eq(s.max_position_embeddings, 4096);
	ck_assert(s.rms_norm_eps == 1e-5f);
	ck_assert(s.fused_qkv && s.fused_gate_up);

	ck_assert_int_eq(spec_of("{}", "qwen2", &s), VD_OK);
	ck_assert_int_eq(s.vocab_size, 151936);
	ck_assert_int_eq(s.intermediate_size, 22016);
	ck_assert_int_eq(s.max_position_embeddings, 32768);
	ck_assert(s.qkv_bias);

	ck_assert_int_eq(spec_of("{\"hidden_size\": 1536, \"num_attention_heads\": 12,"
				 "\"num_key_value_heads\": 2, \"rope_scaling\": {\"type\": \"mrope\","
				 "\"mrope_section\": [16, 24, 24]}}", "qwen2_vl", &s), VD_OK);
	ck_assert_int_eq(s.vocab_size, 152064);
	ck_assert(s.rope_theta == 1e6 && s.qkv_bias);
	ck_assert_int_eq(s.head_dim, 128);
	ck_assert_int_eq(s.rope_type, VD_ROPE_MROPE);
	ck_assert_int_eq(s.mrope_section[2], 24);

	/* explicit head_dim and llama's attention_bias */
	ck_assert_int_eq(spec_of("{\"hidden_size\": 64, \"num_attention_heads\": 4, \"head_dim\": 32,"
				 "\"attention_bias\": true, \"rms_norm_eps\": 1e-5}", "llama", &s), VD_OK);
	ck_assert_int_eq(s.head_dim, 32);
	ck_assert(s.qkv_bias && s.rms_norm_eps == 1e-5f);
	ck_assert_int_eq(spec_of("{}", "gpt2", &s), VD_ERR_UNSUPPORTED);
}
END_TEST

START_TEST(test_spec_rope_forms)
{
	vd_decoder_spec s;

	/* v5 rope_parameters for Qwen2-VL: rope_type default + mrope_section */
	ck_assert_int_eq(spec_of("{\"hidden_size\": 64, \"num_attention_heads\": 4,"
				 "\"num_key_value_heads\": 2,"
				 "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 5000.0,"
				 "\"mrope_section\": [4, 2, 2]}}", "qwen2_vl", &s), VD_OK);
	ck_assert_int_eq(s.rope_type, VD_ROPE_MROPE);
	ck_assert(s.rope_theta == 5000.0);
	/* v5 longrope with the pretraining length inside and a factor: the
	 * attention factor follows HF's rule with that factor */
	ck_assert_int_eq(spec_of("{\"hidden_size\": 64, \"num_attention_heads\": 4,"
				 "\"max_position_embeddings\": 131072, \"rope_parameters\": {"
				 "\"rope_type\": \"longrope\", \"rope_theta\": 10000.0, \"factor\": 32.0,"
				 "\"original_max_position_embeddings\": 4096,"
				 "\"short_factor\": [1,1,1,1,1,1,1,1], \"long_factor\": [2,2,2,2,2,2,2,2]}}",
				 "phi3", &s), VD_OK);
	ck_assert_int_eq(s.rope_type, VD_ROPE_LONGROPE);
	ck_assert_int_eq(s.original_max_position_embeddings, 4096);
	ck_assert(fabs(s.attention_factor - 1.190238) < 1e-6);
	/* v4 Phi-3.5 style: "su" with the length at the top level; the
	 * attention factor is left for create to derive */
	ck_assert_int_eq(spec_of("{\"hidden_size\": 64, \"num_attention_heads\": 4,"
				 "\"max_position_embeddings\": 131072,"
				 "\"original_max_position_embeddings\": 4096, \"rope_scaling\": {"
				 "\"type\": \"su\", \"short_factor\": [1,1,1,1,1,1,1,1],"
				 "\"long_factor\": [2,2,2,2,2,2,2,2]}}", "phi3", &s), VD_OK);
	ck_assert_int_eq(s.original_max_position_embeddings, 4096);
	ck_assert(s.attention_factor == 0.0f);
	ck_assert(s.long_factor[7] == 2.0f);
	/* partial rotary halves the factor count */
	ck_assert_int_eq(spec_of("{\"hidden_size\": 64, \"num_attention_heads\": 4,"
				 "\"partial_rotary_factor\": 0.5, \"rope_scaling\": {\"type\": \"longrope\","
				 "\"short_factor\": [1,1,1,1], \"long_factor\": [2,2,2,2]}}", "phi3", &s),
			 VD_OK);
	ck_assert_int_eq(s.n_rope_factors, 4);
	/* wrong factor count, bad sections, unsupported types */
	ck_assert_int_eq(spec_of("{\"hidden_size\": 64, \"num_attention_heads\": 4, \"rope_scaling\": {"
				 "\"type\": \"su\", \"short_factor\": [1,1], \"long_factor\": [2,2]}}",
				 "phi3", &s), VD_ERR_FORMAT);
	ck_assert_int_eq(spec_of("{\"hidden_size\": 64, \"num_attention_heads\": 4,"
				 "\"num_key_value_heads\": 4, \"rope_scaling\": {"
				 "\"type\": \"mrope\", \"mrope_section\": [4, 4, 4]}}", "qwen2_vl", &s),
			 VD_ERR_FORMAT);
	ck_assert(strstr(vd_error_message(), "mrope_section sums to 12") != NULL);
	ck_assert_int_eq(spec_of("{\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0}}", "llama", &s),
			 VD_ERR_UNSUPPORTED);
	ck_assert_int_eq(spec_of("{\"hidden_act\": \"gelu\"}", "llama", &s), VD_ERR_UNSUPPORTED);
}
END_TEST

START_TEST(test_decoder_missing_weight)
{
	vd_backend *be;
	vd_weights *w;
	vd_json *cfg;
	vd_decoder_spec spec;
	vd_decoder *d = NULL;

	require_ref();
	ck_assert_int_eq(vd_cpu_backend_create(1, &be), VD_OK);
	ck_assert_int_eq(vd_json_load_file(ref_path("llama", "config.json"), &cfg), VD_OK);
	ck_assert_int_eq(vd_weights_open_file(ref_path("llama", "model.safetensors"), &w), VD_OK);
	ck_assert_int_eq(vd_decoder_spec_from_hf(cfg, "llama", &spec), VD_OK);
	snprintf(spec.prefix, sizeof(spec.prefix), "model.");
	/* tied: lm_head "" reads embed_tokens; a missing lm_head name fails */
	snprintf(spec.lm_head, sizeof(spec.lm_head), "language_model.lm_head.weight");
	ck_assert_int_eq(vd_decoder_create(be, w, &spec, &d), VD_ERR_NOT_FOUND);
	ck_assert(strstr(vd_error_message(), "language_model.lm_head.weight") != NULL);
	ck_assert_ptr_null(d);
	/* fused names where the checkpoint has separate ones */
	spec.lm_head[0] = '\0';
	spec.fused_qkv = true;
	ck_assert_int_eq(vd_decoder_create(be, w, &spec, &d), VD_ERR_NOT_FOUND);
	ck_assert(strstr(vd_error_message(), "model.layers.0.self_attn.qkv_proj.weight") != NULL);
	/* a shape that does not match the spec */
	spec.fused_qkv = false;
	spec.intermediate_size = 50;
	ck_assert_int_eq(vd_decoder_create(be, w, &spec, &d), VD_ERR_FORMAT);
	vd_weights_close(w);
	vd_json_free(cfg);
	vd_cpu_backend_destroy(be);
}
END_TEST

/* ------------------------------------------------------------------ CLIP */

START_TEST(test_clip)
{
	vd_backend *be;
	vd_weights *w, *exp;
	vd_json *cfg;
	vd_clip_config cc;
	vd_tensor px;
	int run[3] = { 2, 3, 0 };

	require_ref();
	ck_assert_int_eq(vd_cpu_backend_create(3, &be), VD_OK);
	ck_assert_int_eq(vd_json_load_file(ref_path("clip", "config.json"), &cfg), VD_OK);
	ck_assert_int_eq(vd_weights_open_file(ref_path("clip", "model.safetensors"), &w), VD_OK);
	ck_assert_int_eq(vd_weights_open_file(ref_path("clip", "expected.safetensors"), &exp), VD_OK);
	ck_assert_int_eq(vd_clip_config_from_hf(cfg, &cc), VD_OK);
	ck_assert_int_eq(cc.hidden_act, VD_ACT_QUICK_GELU); /* class defaults */
	ck_assert(cc.layer_norm_eps == 1e-5f);
	ck_assert_int_eq(cc.num_channels, 3);
	ck_assert_int_eq(cc.num_layers, 3);
	px = expect(exp, "pixels", VD_DTYPE_F32);
	for (int i = 0; i < 3; i++) {
		vd_clip *clip = NULL;
		vd_tensor out, want;
		char key[32];
		double worst = 0;

		ck_assert_msg(vd_clip_create(be, w, "vision_tower.vision_model.", &cc, run[i], &clip) ==
			      VD_OK, "%s", vd_error_message());
		ck_assert_msg(vd_clip_forward(clip, px.data, 2, &out) == VD_OK, "%s",
			      vd_error_message());
		snprintf(key, sizeof(key), "hidden%d", run[i]);
		want = expect(exp, key, VD_DTYPE_F32);
		ck_assert_int_eq(out.shape[0], want.shape[0]);
		ck_assert_int_eq(out.shape[1], want.shape[1]);
		for (int64_t k = 0; k < vd_tensor_numel(&want); k++)
			worst = fmax(worst, fabs((double)((float *)out.data)[k] - ((float *)want.data)[k]));
		ck_assert_msg(worst < 1e-4, "clip after %d layers: max diff %g", run[i], worst);
		be->ops->free(be, &out);
		vd_clip_destroy(clip);
	}
	{
		vd_clip *clip = NULL;

		ck_assert_int_eq(vd_clip_create(be, w, "vision_tower.", &cc, 2, &clip), VD_ERR_NOT_FOUND);
		ck_assert(strstr(vd_error_message(), "vision_tower.embeddings") != NULL);
		ck_assert_int_eq(vd_clip_create(be, w, "vision_tower.vision_model.", &cc, 4, &clip),
				 VD_ERR_INVALID_ARG);
	}
	vd_weights_close(exp);
	vd_weights_close(w);
	vd_json_free(cfg);
	vd_cpu_backend_destroy(be);
}
END_TEST

START_TEST(test_clip_config_keys)
{
	vd_json *j;
	vd_clip_config cc;
	const char *txt = "{\"hidden_size\": 1024, \"intermediate_size\": 4096, \"num_hidden_layers\": 24,"
			  "\"num_attention_heads\": 16, \"image_size\": 336, \"patch_size\": 14,"
			  "\"hidden_act\": \"gelu\", \"layer_norm_eps\": 1e-6}";

	ck_assert_int_eq(vd_json_parse("{}", 2, &j), VD_OK);
	ck_assert_int_eq(vd_clip_config_from_hf(j, &cc), VD_OK);
	ck_assert_int_eq(cc.hidden_size, 768);
	ck_assert_int_eq(cc.intermediate_size, 3072);
	ck_assert_int_eq(cc.num_layers, 12);
	ck_assert_int_eq(cc.num_heads, 12);
	ck_assert_int_eq(cc.image_size, 224);
	ck_assert_int_eq(cc.patch_size, 32);
	vd_json_free(j);
	ck_assert_int_eq(vd_json_parse(txt, strlen(txt), &j), VD_OK);
	ck_assert_int_eq(vd_clip_config_from_hf(j, &cc), VD_OK);
	ck_assert_int_eq(cc.num_layers, 24);
	ck_assert_int_eq(cc.patch_size, 14);
	ck_assert_int_eq(cc.hidden_act, VD_ACT_GELU);
	ck_assert(cc.layer_norm_eps == 1e-6f);
	vd_json_free(j);
}
END_TEST

static Suite *models_suite(void)
{
	Suite *s = suite_create("models");
	TCase *tc = tcase_create("cpu");

	tcase_set_timeout(tc, 60);
	tcase_add_unchecked_fixture(tc, ref_setup, ref_teardown);
	tcase_add_test(tc, test_llama_paged);
	tcase_add_test(tc, test_phi3_longrope);
	tcase_add_test(tc, test_qwen2vl_mrope);
	tcase_add_test(tc, test_decoder_spec_from_ref);
	tcase_add_test(tc, test_spec_defaults);
	tcase_add_test(tc, test_spec_rope_forms);
	tcase_add_test(tc, test_decoder_missing_weight);
	tcase_add_test(tc, test_clip);
	tcase_add_test(tc, test_clip_config_keys);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(models_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
