/* textlm.so: a model family written outside the vllmd tree, against the
 * installed SDK only (pkg-config vllmd): plain Llama-architecture text
 * models (LlamaForCausalLM). It shows what every family gives the core:
 * the architectures it serves, create/destroy (read config.json, describe
 * the text decoder from models/ and where its weights are), and expand
 * (prompt -> token ids). A vision family adds process_image, check_embeds,
 * vision_tower, projector and placeholder (see plugins/llava/llava.c in
 * the vllmd sources); a text-only family leaves them NULL and states that
 * it takes no images.
 *
 * The plugin includes only the installed vllmd/ headers and calls the
 * core only through the vd_host_api table it is handed: it links nothing
 * of vllmd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vllmd/plugin.h>
#include <vllmd/plugin_util.h>

static const vd_host_api *H;

typedef struct textlm {
	const vd_tokenizer *tok;
} textlm;

/* Checkpoint layouts this family reads: the hub's, and transformers 5
 * conversions of multimodal models that nest the text model. */
static const char *const lm_prefixes[] = { "model.", "model.language_model.", NULL };

static void textlm_destroy(void *state)
{
	free(state);
}

static vd_status textlm_create(const vd_host_api *host, const vd_model_ctx *ctx, void **state,
			       vd_decoder_spec *spec, vd_mm_limits *limits)
{
	textlm *m;
	int layout = 0;
	vd_status st;

	*state = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return host->errorf(VD_ERR_NOMEM, "out of memory");
	m->tok = ctx->tokenizer;
	/* the decoder: Llama's hyperparameters from config.json, its weights
	 * under the layout's prefix, the head unless the embeddings are tied */
	st = vd_plugin_probe_layout(host, ctx, "textlm", lm_prefixes, "embed_tokens.weight",
				    &layout);
	if (st == VD_OK)
		st = host->decoder_spec_from_hf(ctx->config, "llama", spec);
	if (st == VD_OK)
		st = vd_plugin_lm_head(host, ctx, ctx->config, "lm_head.weight", spec);
	if (st == VD_OK)
		st = vd_plugin_vocab_size(host, ctx->config, spec);
	if (st != VD_OK) {
		textlm_destroy(m);
		return st;
	}
	snprintf(spec->prefix, sizeof(spec->prefix), "%s", lm_prefixes[layout]);
	limits->max_images = 0; /* text only */
	limits->max_tokens_per_image = 0;
	limits->embed_dim = spec->hidden_size;
	*state = m;
	return VD_OK;
}

/* The prompt's ids (tokenized with BOS unless the caller says otherwise),
 * positions 0..n-1. Thread-safe: it reads only m and the tokenizer. */
static vd_status textlm_expand(void *state, const vd_prompt_in *in, vd_expansion *out)
{
	textlm *m = state;
	const int32_t *ids;
	int32_t *owned;
	size_t n;
	vd_status st = vd_plugin_prompt_ids(H, m->tok, in, -1, "image", &ids, &n, &owned);

	if (st == VD_OK)
		st = H->exp_push(out, ids, (int64_t)n);
	free(owned);
	return st;
}

static const char *const textlm_archs[] = { "LlamaForCausalLM", NULL };

static const vd_family textlm_family = {
	.struct_size = sizeof(vd_family),
	.name = "textlm",
	.architectures = textlm_archs,
	.create = textlm_create,
	.destroy = textlm_destroy,
	.expand = textlm_expand,
};

/* The descriptor and entry point. The entry refuses a vllmd of another ABI
 * major or whose host table ends before exp_len, the last host call this
 * plugin makes (every one is from ABI minor 0). */
VD_PLUGIN_SINGLE_FAMILY(textlm_family, "textlm", 0, VD_HOST_API_THROUGH(exp_len), H)
