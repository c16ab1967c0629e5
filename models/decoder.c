/* The generic pre-norm text decoder (Llama, Mistral, Phi-3, Qwen2, Qwen2-VL's
 * M-RoPE variant) over the ops table, so it runs on every backend. Weights
 * are uploaded once in the backend's compute dtype with q/k/v fused into one
 * matrix and gate/up into another; RoPE tables are precomputed at create.
 * A growable workspace sized to the largest batch seen lives in the decoder,
 * so one decoder runs one forward at a time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "vllmd/models.h"

/* ------------------------------------------------------- HF config parsing */

/* transformers class defaults of the configs we read (v5 sources). */
typedef struct class_defaults {
	const char *model_type;
	int vocab, hidden, intermediate, layers, heads;
	int kv_heads;   /* 0: same as heads */
	int max_pos;
	int orig_max;   /* longrope original_max_position_embeddings; 0: max_pos */
	double eps, theta;
	bool qkv_bias;  /* q/k/v biases whatever attention_bias says */
	bool fused;     /* Phi-3 checkpoints carry qkv_proj and gate_up_proj */
} class_defaults;

static const class_defaults class_table[] = {
	{ "llama", 32000, 4096, 11008, 32, 32, 0, 2048, 0, 1e-6, 10000.0, false, false },
	{ "mistral", 32000, 4096, 14336, 32, 32, 8, 131072, 0, 1e-6, 10000.0, false, false },
	{ "phi3", 32064, 3072, 8192, 32, 32, 0, 4096, 4096, 1e-5, 10000.0, false, true },
	{ "qwen2", 151936, 4096, 22016, 32, 32, 32, 32768, 0, 1e-6, 10000.0, true, false },
	{ "qwen2_vl", 152064, 8192, 29568, 80, 64, 8, 32768, 0, 1e-5, 1000000.0, true, false },
	{ "qwen2_vl_text", 152064, 8192, 29568, 80, 64, 8, 32768, 0, 1e-5, 1000000.0, true, false },
};

static vd_status get_int(const vd_json *cfg, const char *key, int64_t def, int *out)
{
	int64_t v;
	vd_status st = vd_json_int(cfg, key, def, &v);

	if (st)
		return st;
	if (v < 0 || v > INT32_MAX)
		return vd_errorf(VD_ERR_FORMAT, "config key '%s' = %lld is out of range", key,
				 (long long)v);
	*out = (int)v;
	return VD_OK;
}

/* Read a number array of exactly n entries into out. */
static vd_status get_factors(const vd_json *rope, const char *key, int n, float *out)
{
	const vd_json *a = vd_json_get(rope, key);

	if (!vd_json_is_array(a))
		return vd_errorf(VD_ERR_FORMAT, "rope %s is missing or not an array", key);
	if (vd_json_len(a) != n)
		return vd_errorf(VD_ERR_FORMAT, "rope %s has %d entries, expected rot_dim/2 = %d",
				 key, vd_json_len(a), n);
	for (int i = 0; i < n; i++) {
		const vd_json *e = vd_json_at(a, i);

		if (!vd_json_is_number(e))
			return vd_errorf(VD_ERR_FORMAT, "rope %s[%d] is not a number", key, i);
		out[i] = (float)vd_json_number_value(e, 0.0);
	}
	return VD_OK;
}

/* rope_scaling (v4) wins over rope_parameters (v5), as in transformers;
 * keys inside it win over top-level rope_theta/partial_rotary_factor. */
static vd_status parse_rope(const vd_json *cfg, const class_defaults *cd, vd_decoder_spec *s)
{
	const vd_json *rope = vd_json_get(cfg, "rope_scaling");
	const char *type = "default";
	double theta, prf, attn;
	int rot;
	vd_status st;

	if (!vd_json_is_object(rope))
		rope = vd_json_get(cfg, "rope_parameters");
	if (!vd_json_is_object(rope))
		rope = NULL;
	if ((st = vd_json_num(cfg, "rope_theta", cd->theta, &theta)) ||
	    (st = vd_json_num(rope, "rope_theta", theta, &theta)) ||
	    (st = vd_json_num(cfg, "partial_rotary_factor", 1.0, &prf)) ||
	    (st = vd_json_num(rope, "partial_rotary_factor", prf, &prf)) ||
	    (st = vd_json_str(rope, "type", type, &type)) ||
	    (st = vd_json_str(rope, "rope_type", type, &type)))
		return st;
	s->rope_theta = theta;
	s->partial_rotary_factor = (float)prf;
	rot = (int)(s->head_dim * prf);
	if (theta <= 0.0 || rot <= 0 || rot % 2 || rot > s->head_dim)
		return vd_errorf(VD_ERR_FORMAT,
				 "rope: theta %g and rotary dims %d (head_dim %d) are invalid", theta,
				 rot, s->head_dim);
	s->rope_type = VD_ROPE_DEFAULT;
	s->original_max_position_embeddings = s->max_position_embeddings;
	if (vd_json_get(rope, "mrope_section") && (!strcmp(type, "default") || !strcmp(type, "mrope"))) {
		const vd_json *sec = vd_json_get(rope, "mrope_section");
		int sum = 0;

		if (!vd_json_is_array(sec) || vd_json_len(sec) != 3)
			return vd_errorf(VD_ERR_FORMAT, "rope mrope_section must be 3 integers");
		for (int i = 0; i < 3; i++) {
			double v = vd_json_number_value(vd_json_at(sec, i), -1.0);

			if (v < 0 || v != (int)v)
				return vd_errorf(VD_ERR_FORMAT, "rope mrope_section[%d] is invalid", i);
			s->mrope_section[i] = (int)v;
			sum += (int)v;
		}
		if (sum != rot / 2)
			return vd_errorf(VD_ERR_FORMAT, "rope mrope_section sums to %d, expected %d",
					 sum, rot / 2);
		s->rope_type = VD_ROPE_MROPE;
		return VD_OK;
	}
	if (!strcmp(type, "default"))
		return VD_OK;
	if (!strcmp(type, "mrope"))
		return vd_errorf(VD_ERR_FORMAT, "rope type mrope needs mrope_section");
	if (strcmp(type, "su") && strcmp(type, "longrope"))
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "rope type '%s' is not supported (default, mrope, su/longrope are)",
				 type);
	if (rot / 2 > VD_MAX_ROPE_FACTORS)
		return vd_errorf(VD_ERR_UNSUPPORTED, "longrope with %d factors (max %d)", rot / 2,
				 VD_MAX_ROPE_FACTORS);
	s->rope_type = VD_ROPE_LONGROPE;
	s->n_rope_factors = rot / 2;
	if ((st = get_factors(rope, "short_factor", rot / 2, s->short_factor)) ||
	    (st = get_factors(rope, "long_factor", rot / 2, s->long_factor)))
		return st;
	/* Phi-3 keeps the pretraining length at the top level; transformers
	 * gives that copy priority over the one inside the rope dict. */
	if ((st = get_int(rope, "original_max_position_embeddings",
			  cd->orig_max ? cd->orig_max : s->max_position_embeddings,
			  &s->original_max_position_embeddings)) ||
	    (st = get_int(cfg, "original_max_position_embeddings",
			  s->original_max_position_embeddings,
			  &s->original_max_position_embeddings)) ||
	    (st = vd_json_num(rope, "attention_factor", 0.0, &attn)))
		return st;
	if (s->original_max_position_embeddings <= 1)
		return vd_errorf(VD_ERR_FORMAT, "longrope original_max_position_embeddings must be > 1");
	s->attention_factor = (float)attn;
	if (attn == 0.0 && vd_json_get(rope, "factor")) {
		/* an explicit factor replaces max_pos / orig_max in HF's rule */
		double f = vd_json_number_value(vd_json_get(rope, "factor"), 1.0);

		s->attention_factor = f <= 1.0 ? 1.0f : (float)sqrt(1.0 + log(f) /
					  log((double)s->original_max_position_embeddings));
	}
	return VD_OK;
}

vd_status vd_decoder_spec_from_hf(const vd_json *cfg, const char *model_type,
				  vd_decoder_spec *spec)
{
	const class_defaults *cd = NULL;
	vd_decoder_spec s;
	const char *act;
	double eps;
	bool bias;
	vd_status st;

	if (!cfg || !model_type || !spec)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder spec: config, model_type and spec are required");
	for (size_t i = 0; i < sizeof(class_table) / sizeof(class_table[0]); i++)
		if (!strcmp(class_table[i].model_type, model_type))
			cd = &class_table[i];
	if (!cd)
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "decoder model_type '%s' is not supported (llama, mistral, phi3, qwen2, qwen2_vl)",
				 model_type);
	memset(&s, 0, sizeof(s));
	s.struct_size = sizeof(s);
	if ((st = get_int(cfg, "vocab_size", cd->vocab, &s.vocab_size)) ||
	    (st = get_int(cfg, "hidden_size", cd->hidden, &s.hidden_size)) ||
	    (st = get_int(cfg, "intermediate_size", cd->intermediate, &s.intermediate_size)) ||
	    (st = get_int(cfg, "num_hidden_layers", cd->layers, &s.num_layers)) ||
	    (st = get_int(cfg, "num_attention_heads", cd->heads, &s.num_heads)) ||
	    (st = get_int(cfg, "num_key_value_heads", cd->kv_heads ? cd->kv_heads : s.num_heads,
			  &s.num_kv_heads)) ||
	    (st = get_int(cfg, "max_position_embeddings", cd->max_pos,
			  &s.max_position_embeddings)) ||
	    (st = vd_json_num(cfg, "rms_norm_eps", cd->eps, &eps)) ||
	    (st = vd_json_bool(cfg, "attention_bias", false, &bias)) ||
	    (st = vd_json_str(cfg, "hidden_act", "silu", &act)))
		return st;
	if (s.hidden_size <= 0 || s.num_heads <= 0 || s.num_kv_heads <= 0 ||
	    s.num_heads % s.num_kv_heads || s.vocab_size <= 0 || s.intermediate_size <= 0 ||
	    s.num_layers <= 0)
		return vd_errorf(VD_ERR_FORMAT,
				 "decoder config: sizes must be positive and heads (%d) a multiple of kv heads (%d)",
				 s.num_heads, s.num_kv_heads);
	if ((st = get_int(cfg, "head_dim", s.hidden_size / s.num_heads, &s.head_dim)))
		return st;
	if (s.head_dim <= 0)
		return vd_errorf(VD_ERR_FORMAT, "decoder config: head_dim must be positive");
	if (strcmp(act, "silu"))
		return vd_errorf(VD_ERR_UNSUPPORTED, "decoder hidden_act '%s' (only silu)", act);
	s.rms_norm_eps = (float)eps;
	/* Qwen2 attention always has q/k/v biases; Llama's come with
	 * attention_bias (o_proj's bias is loaded when the checkpoint has it) */
	s.qkv_bias = cd->qkv_bias || bias;
	s.fused_qkv = cd->fused;
	s.fused_gate_up = cd->fused;
	if ((st = parse_rope(cfg, cd, &s)))
		return st;
	*spec = s;
	return VD_OK;
}

/* ------------------------------------------------------------ the decoder */

typedef struct dec_layer {
	vd_tensor in_norm, post_norm; /* (hidden) */
	vd_tensor qkv_w;              /* ((H + 2 Hkv) D, hidden): rows q | k | v */
	vd_tensor qkv_b;              /* ((H + 2 Hkv) D) or unallocated */
	vd_tensor o_w;                /* (hidden, H D) */
	vd_tensor o_b;                /* (hidden) when the checkpoint has it */
	vd_tensor gate_up_w;          /* (2 F, hidden): rows gate | up */
	vd_tensor down_w;             /* (hidden, F) */
} dec_layer;

struct vd_decoder {
	vd_backend *be;
	vd_decoder_spec spec;
	vd_dtype dtype;
	vd_tensor embed;          /* (vocab, hidden) */
	vd_tensor norm;           /* (hidden) */
	vd_tensor lm_head_w;      /* (vocab, hidden); unallocated when tied */
	const vd_tensor *lm_head; /* &lm_head_w or &embed */
	dec_layer *layers;
	/* rope: inv_freq (n_tables, rot/2) and pos_row (rot/2), host */
	float inv_freq[2 * VD_MAX_ROPE_FACTORS];
	uint8_t pos_row[VD_MAX_ROPE_FACTORS];
	vd_rope rope;
	/* workspace, grown on demand: rows for cap_tokens / cap_logits */
	int64_t cap_tokens, cap_logits;
	vd_tensor h;    /* (cap, hidden) normed input of a sublayer */
	vd_tensor qkv;  /* (cap, (H + 2 Hkv) D) */
	vd_tensor attn; /* (cap, H D) */
	vd_tensor o;    /* (cap, hidden) sublayer output */
	vd_tensor gu;   /* (cap, 2 F) */
	vd_tensor act;  /* (cap, F) */
	vd_tensor lg_r, lg_o, lg_y; /* (cap_logits, hidden) */
};

static vd_status alloc2(vd_decoder *d, vd_tensor *t, int64_t rows, int64_t cols)
{
	int64_t shape[2] = { rows, cols };

	return d->be->ops->alloc(d->be, t, d->dtype, cols > 0 ? 2 : 1, cols > 0 ? shape : &rows);
}

static void release(vd_decoder *d, vd_tensor *t)
{
	d->be->ops->free(d->be, t);
}

/* Upload checkpoint tensor `name`, which must be (rows, cols) (cols == 0:
 * a vector of rows), into rows [row0, row0 + rows) of dst. */
static vd_status load_rows(vd_decoder *d, const vd_weights *w, const char *name, int64_t rows,
			   int64_t cols, vd_tensor *dst, int64_t row0)
{
	vd_tensor src, view;
	vd_status st = vd_weights_get(w, name, &src);

	if (st)
		return st;
	if (src.ndim != (cols > 0 ? 2 : 1) || src.shape[0] != rows ||
	    (cols > 0 && src.shape[1] != cols))
		return vd_errorf(VD_ERR_FORMAT,
				 "weight %s: %d dims, shape[0] %lld; expected %d dims (%lld, %lld)",
				 name, src.ndim, (long long)src.shape[0], cols > 0 ? 2 : 1,
				 (long long)rows, (long long)cols);
	view = vd_tensor_rows(dst, row0, rows);
	return d->be->ops->upload(d->be, &view, src.data, src.dtype, vd_tensor_numel(&src));
}

/* Allocate dst (rows, cols) and fill it from one checkpoint tensor. */
static vd_status load_new(vd_decoder *d, const vd_weights *w, const char *name, int64_t rows,
			  int64_t cols, vd_tensor *dst)
{
	vd_status st = alloc2(d, dst, rows, cols);

	return st ? st : load_rows(d, w, name, rows, cols, dst, 0);
}

/* Fill `rows` rows of dst at row0 from <base>.<part> names of n parts of
 * given row counts, e.g. q_proj, k_proj, v_proj into one fused matrix. */
static vd_status load_parts(vd_decoder *d, const vd_weights *w, const char *base,
			    const char *const *parts, const int64_t *part_rows, int n,
			    const char *suffix, int64_t cols, vd_tensor *dst)
{
	char name[512];
	int64_t row0 = 0;
	vd_status st;

	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s%s.%s", base, parts[i], suffix);
		if ((st = load_rows(d, w, name, part_rows[i], cols, dst, row0)))
			return st;
		row0 += part_rows[i];
	}
	return VD_OK;
}

static vd_status load_layer(vd_decoder *d, const vd_weights *w, int l)
{
	const vd_decoder_spec *s = &d->spec;
	dec_layer *L = &d->layers[l];
	int64_t hid = s->hidden_size, D = s->head_dim, F = s->intermediate_size;
	int64_t nq = (int64_t)s->num_heads * D, nkv = (int64_t)s->num_kv_heads * D;
	int64_t qkv_rows[3] = { nq, nkv, nkv }, fused_qkv[1] = { nq + 2 * nkv };
	int64_t gu_rows[2] = { F, F }, fused_gu[1] = { 2 * F };
	static const char *const qkv_names[3] = { "q_proj", "k_proj", "v_proj" };
	static const char *const qkv_fused[1] = { "qkv_proj" };
	static const char *const gu_names[2] = { "gate_proj", "up_proj" };
	static const char *const gu_fused[1] = { "gate_up_proj" };
	char attn[400], mlp[400], name[512];
	vd_status st;

	snprintf(attn, sizeof(attn), "%slayers.%d.self_attn.", s->prefix, l);
	snprintf(mlp, sizeof(mlp), "%slayers.%d.mlp.", s->prefix, l);
	snprintf(name, sizeof(name), "%slayers.%d.input_layernorm.weight", s->prefix, l);
	if ((st = load_new(d, w, name, hid, 0, &L->in_norm)))
		return st;
	snprintf(name, sizeof(name), "%slayers.%d.post_attention_layernorm.weight", s->prefix, l);
	if ((st = load_new(d, w, name, hid, 0, &L->post_norm)))
		return st;
	if ((st = alloc2(d, &L->qkv_w, nq + 2 * nkv, hid)) ||
	    (st = load_parts(d, w, attn, s->fused_qkv ? qkv_fused : qkv_names,
			     s->fused_qkv ? fused_qkv : qkv_rows, s->fused_qkv ? 1 : 3, "weight",
			     hid, &L->qkv_w)))
		return st;
	if (s->qkv_bias &&
	    ((st = alloc2(d, &L->qkv_b, nq + 2 * nkv, 0)) ||
	     (st = load_parts(d, w, attn, s->fused_qkv ? qkv_fused : qkv_names,
			      s->fused_qkv ? fused_qkv : qkv_rows, s->fused_qkv ? 1 : 3, "bias", 0,
			      &L->qkv_b))))
		return st;
	snprintf(name, sizeof(name), "%so_proj.weight", attn);
	if ((st = load_new(d, w, name, hid, nq, &L->o_w)))
		return st;
	/* Llama's attention_bias also biases o_proj: take it when present */
	snprintf(name, sizeof(name), "%so_proj.bias", attn);
	if (vd_weights_has(w, name) && (st = load_new(d, w, name, hid, 0, &L->o_b)))
		return st;
	if ((st = alloc2(d, &L->gate_up_w, 2 * F, hid)) ||
	    (st = load_parts(d, w, mlp, s->fused_gate_up ? gu_fused : gu_names,
			     s->fused_gate_up ? fused_gu : gu_rows, s->fused_gate_up ? 1 : 2,
			     "weight", hid, &L->gate_up_w)))
		return st;
	snprintf(name, sizeof(name), "%sdown_proj.weight", mlp);
	return load_new(d, w, name, hid, F, &L->down_w);
}

/* inv_freq as transformers computes it, in f32: theta^(-(2i)/rot), divided
 * by the longrope factor of table 0 (short) or 1 (long). */
static void build_rope(vd_decoder *d)
{
	const vd_decoder_spec *s = &d->spec;
	int rot = (int)(s->head_dim * s->partial_rotary_factor), half = rot / 2;
	float theta = (float)s->rope_theta;

	d->rope = (vd_rope){ .rot_dim = rot, .n_tables = 1, .inv_freq = d->inv_freq,
			     .mscale = 1.0f };
	for (int i = 0; i < half; i++) {
		float base = powf(theta, (float)(2 * i) / (float)rot);

		d->inv_freq[i] = 1.0f / base;
		if (s->rope_type == VD_ROPE_LONGROPE) {
			d->inv_freq[i] = 1.0f / (s->short_factor[i] * base);
			d->inv_freq[half + i] = 1.0f / (s->long_factor[i] * base);
		}
	}
	if (s->rope_type == VD_ROPE_LONGROPE) {
		double factor = (double)s->max_position_embeddings /
				s->original_max_position_embeddings;

		d->rope.n_tables = 2;
		d->rope.mscale = s->attention_factor > 0.0f ? s->attention_factor
				 : factor <= 1.0 ? 1.0f
						 : (float)sqrt(1.0 + log(factor) /
							       log((double)s->original_max_position_embeddings));
	}
	if (s->rope_type == VD_ROPE_MROPE) {
		/* frequency i reads positions row t, h or w by section, as
		 * apply_multimodal_rotary_pos_emb does for both halves */
		for (int i = 0; i < half; i++)
			d->pos_row[i] = i < s->mrope_section[0] ? 0
					: i < s->mrope_section[0] + s->mrope_section[1] ? 1 : 2;
		d->rope.pos_row = d->pos_row;
	}
}

static vd_status check_spec(const vd_decoder_spec *s)
{
	int rot;

	if (s->struct_size != sizeof(*s))
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder spec: struct_size %u, expected %zu",
				 s->struct_size, sizeof(*s));
	if (s->vocab_size <= 0 || s->hidden_size <= 0 || s->intermediate_size <= 0 ||
	    s->num_layers <= 0 || s->num_heads <= 0 || s->num_kv_heads <= 0 ||
	    s->num_heads % s->num_kv_heads || s->head_dim <= 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder spec: invalid sizes");
	rot = (int)(s->head_dim * s->partial_rotary_factor);
	if (rot <= 0 || rot % 2 || rot > s->head_dim || s->rope_theta <= 0.0)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder spec: invalid rope (rot_dim %d)", rot);
	if (s->rope_type == VD_ROPE_LONGROPE &&
	    (s->n_rope_factors != rot / 2 || s->original_max_position_embeddings <= 1))
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "decoder spec: longrope needs %d factors and original_max_position_embeddings",
				 rot / 2);
	if (s->rope_type == VD_ROPE_MROPE &&
	    s->mrope_section[0] + s->mrope_section[1] + s->mrope_section[2] != rot / 2)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder spec: mrope_section must sum to %d",
				 rot / 2);
	return VD_OK;
}

vd_status vd_decoder_create(vd_backend *be, const vd_weights *w, const vd_decoder_spec *spec,
			    vd_decoder **out)
{
	vd_decoder *d;
	char name[300];
	vd_status st;

	if (!be || !w || !spec || !out)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder create: NULL argument");
	*out = NULL;
	if ((st = check_spec(spec)))
		return st;
	d = calloc(1, sizeof(*d));
	if (!d)
		return vd_errorf(VD_ERR_NOMEM, "decoder create: out of memory");
	d->be = be;
	d->spec = *spec;
	d->dtype = vd_backend_compute_dtype(be);
	d->layers = calloc((size_t)spec->num_layers, sizeof(dec_layer));
	if (!d->layers) {
		st = vd_errorf(VD_ERR_NOMEM, "decoder create: out of memory");
		goto fail;
	}
	if (spec->embed_name[0])
		snprintf(name, sizeof(name), "%s", spec->embed_name);
	else
		snprintf(name, sizeof(name), "%sembed_tokens.weight", spec->prefix);
	if ((st = load_new(d, w, name, spec->vocab_size, spec->hidden_size, &d->embed)))
		goto fail;
	snprintf(name, sizeof(name), "%snorm.weight", spec->prefix);
	if ((st = load_new(d, w, name, spec->hidden_size, 0, &d->norm)))
		goto fail;
	d->lm_head = &d->embed;
	if (spec->lm_head[0]) {
		if ((st = load_new(d, w, spec->lm_head, spec->vocab_size, spec->hidden_size,
				   &d->lm_head_w)))
			goto fail;
		d->lm_head = &d->lm_head_w;
	}
	for (int l = 0; l < spec->num_layers; l++)
		if ((st = load_layer(d, w, l)))
			goto fail;
	build_rope(d);
	*out = d;
	return VD_OK;

fail:
	vd_decoder_destroy(d);
	return st;
}

static void free_workspace(vd_decoder *d)
{
	vd_tensor *ts[] = { &d->h, &d->qkv, &d->attn, &d->o, &d->gu, &d->act,
			    &d->lg_r, &d->lg_o, &d->lg_y };

	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
		release(d, ts[i]);
	d->cap_tokens = 0;
	d->cap_logits = 0;
}

void vd_decoder_destroy(vd_decoder *d)
{
	if (!d)
		return;
	free_workspace(d);
	if (d->layers) {
		for (int l = 0; l < d->spec.num_layers; l++) {
			dec_layer *L = &d->layers[l];
			vd_tensor *ts[] = { &L->in_norm, &L->post_norm, &L->qkv_w, &L->qkv_b,
					    &L->o_w, &L->o_b, &L->gate_up_w, &L->down_w };

			for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
				release(d, ts[i]);
		}
		free(d->layers);
	}
	release(d, &d->embed);
	release(d, &d->norm);
	release(d, &d->lm_head_w);
	free(d);
}

const vd_decoder_spec *vd_decoder_get_spec(const vd_decoder *d)
{
	return &d->spec;
}

vd_status vd_decoder_embed(vd_decoder *d, const int32_t *ids, int64_t n, vd_tensor *out)
{
	return d->be->ops->embed(d->be, &d->embed, ids, n, out);
}

/* Grow the workspace to hold T token rows and n logit rows. */
static vd_status ensure_workspace(vd_decoder *d, int64_t T, int64_t n)
{
	const vd_decoder_spec *s = &d->spec;
	int64_t D = s->head_dim, hid = s->hidden_size, F = s->intermediate_size;
	int64_t want_t = T > d->cap_tokens ? (T + 63) / 64 * 64 : d->cap_tokens;
	int64_t want_n = n > d->cap_logits ? (n + 15) / 16 * 16 : d->cap_logits;
	vd_status st;

	if (want_t == d->cap_tokens && want_n == d->cap_logits)
		return VD_OK;
	free_workspace(d);
	if ((st = alloc2(d, &d->h, want_t, hid)) ||
	    (st = alloc2(d, &d->qkv, want_t, (int64_t)(s->num_heads + 2 * s->num_kv_heads) * D)) ||
	    (st = alloc2(d, &d->attn, want_t, (int64_t)s->num_heads * D)) ||
	    (st = alloc2(d, &d->o, want_t, hid)) || (st = alloc2(d, &d->gu, want_t, 2 * F)) ||
	    (st = alloc2(d, &d->act, want_t, F)) || (st = alloc2(d, &d->lg_r, want_n, hid)) ||
	    (st = alloc2(d, &d->lg_o, want_n, hid)) || (st = alloc2(d, &d->lg_y, want_n, hid))) {
		free_workspace(d);
		return st;
	}
	d->cap_tokens = want_t;
	d->cap_logits = want_n;
	return VD_OK;
}

vd_status vd_decoder_forward(vd_decoder *d, vd_tensor *x, const int32_t *positions,
			     const int32_t *rope_table, const vd_attn_meta *meta,
			     vd_tensor *k_cache, vd_tensor *v_cache, const int32_t *logit_rows,
			     int n_logits, vd_tensor *logits)
{
	const vd_decoder_spec *s = &d->spec;
	vd_backend *be = d->be;
	const vd_ops *o = be->ops;
	int64_t T, H = s->num_heads, Hkv = s->num_kv_heads, D = s->head_dim;
	float scale = (float)(1.0 / sqrt((double)D)), eps = s->rms_norm_eps;
	vd_tensor h, qkv, q, k, qk, v, attn, attn3, out, gu, act, lr, lo, ly;
	vd_rope rope = d->rope;
	vd_status st;

	if (!x || !meta || !k_cache || !v_cache || !logits || n_logits < 0 ||
	    (n_logits > 0 && !logit_rows) || x->ndim != 2 || x->shape[1] != s->hidden_size)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "decoder forward: x must be (T, %d) with meta, caches and logits",
				 s->hidden_size);
	T = x->shape[0];
	if (meta->num_tokens != T)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder forward: meta has %d tokens, x has %lld",
				 meta->num_tokens, (long long)T);
	if (logits->ndim != 2 || logits->shape[0] != n_logits || logits->shape[1] != s->vocab_size)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder forward: logits must be (%d, %d)",
				 n_logits, s->vocab_size);
	if (T > 0 && !positions)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder forward: positions is NULL");
	if (T == 0 && n_logits > 0)
		return vd_errorf(VD_ERR_INVALID_ARG, "decoder forward: logits wanted from 0 rows");
	if (T == 0)
		return VD_OK;
	if ((st = ensure_workspace(d, T, n_logits)))
		return st;
	/* longrope picks short (0) or long (1) per token; no table = short */
	rope.table_idx = s->rope_type == VD_ROPE_LONGROPE ? rope_table : NULL;
	h = vd_tensor_rows(&d->h, 0, T);
	qkv = vd_tensor_rows(&d->qkv, 0, T);
	q = vd_tensor_heads(&qkv, 0, H, D);
	k = vd_tensor_heads(&qkv, H * D, Hkv, D);
	/* q and k heads are adjacent in qkv and rotate alike: one rope call */
	qk = vd_tensor_heads(&qkv, 0, H + Hkv, D);
	v = vd_tensor_heads(&qkv, (H + Hkv) * D, Hkv, D);
	attn = vd_tensor_rows(&d->attn, 0, T);
	attn3 = vd_tensor_heads(&attn, 0, H, D);
	out = vd_tensor_rows(&d->o, 0, T);
	gu = vd_tensor_rows(&d->gu, 0, T);
	act = vd_tensor_rows(&d->act, 0, T);
	for (int l = 0; l < s->num_layers; l++) {
		const dec_layer *L = &d->layers[l];

		/* x is the residual stream; the previous MLP output joins it here */
		st = l == 0 ? o->rmsnorm(be, x, &L->in_norm, eps, &h)
			    : o->add_rmsnorm(be, x, &out, &L->in_norm, eps, &h);
		if (st || (st = o->linear(be, &h, &L->qkv_w, L->qkv_b.alloc ? &L->qkv_b : NULL, &qkv)) ||
		    (st = o->rope(be, &qk, positions, &rope)) ||
		    (st = o->cache_write(be, &k, &v, &k_cache[l], &v_cache[l], meta)) ||
		    (st = o->paged_attention(be, &q, &k_cache[l], &v_cache[l], meta, scale, &attn3)) ||
		    (st = o->linear(be, &attn, &L->o_w, L->o_b.alloc ? &L->o_b : NULL, &out)) ||
		    (st = o->add_rmsnorm(be, x, &out, &L->post_norm, eps, &h)) ||
		    (st = o->linear(be, &h, &L->gate_up_w, NULL, &gu)) ||
		    (st = o->silu_mul(be, &gu, &act)) ||
		    (st = o->linear(be, &act, &L->down_w, NULL, &out)))
			return st;
	}
	if (n_logits == 0)
		return VD_OK;
	/* only the sampled rows need the last residual add, norm and lm_head */
	lr = vd_tensor_rows(&d->lg_r, 0, n_logits);
	lo = vd_tensor_rows(&d->lg_o, 0, n_logits);
	ly = vd_tensor_rows(&d->lg_y, 0, n_logits);
	if ((st = o->gather_rows(be, x, logit_rows, n_logits, &lr)) ||
	    (st = o->gather_rows(be, &out, logit_rows, n_logits, &lo)) ||
	    (st = o->add_rmsnorm(be, &lr, &lo, &d->norm, eps, &ly)))
		return st;
	return o->linear(be, &ly, d->lm_head, NULL, logits);
}
