/* Building blocks shared by model-family plugins, implemented once in models/
 * against the ops table: a generic pre-norm text decoder (Llama, Phi-3,
 * Qwen2 variants) and the CLIP vision transformer. Plugins reach the
 * functions through vd_host_api; the engine calls the decoder directly. */
#ifndef VLLMD_MODELS_H
#define VLLMD_MODELS_H

#include <stdbool.h>
#include <stdint.h>
#include "vllmd/json.h"
#include "vllmd/ops.h"
#include "vllmd/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- decoder */

typedef enum vd_rope_type {
	VD_ROPE_DEFAULT = 0,  /* inv_freq = theta^(-2i/d) */
	VD_ROPE_LONGROPE = 1, /* Phi-3 "su"/"longrope": short/long factors */
	VD_ROPE_MROPE = 2,    /* Qwen2-VL multimodal 3-D sections */
} vd_rope_type;

#define VD_MAX_ROPE_FACTORS 256

/* Everything the generic decoder needs. Weight names are
 *   <prefix>embed_tokens.weight, <prefix>norm.weight,
 *   <prefix>layers.<i>.input_layernorm.weight, ...post_attention_layernorm...,
 *   ...self_attn.{q,k,v,o}_proj.{weight,bias} or self_attn.qkv_proj.weight,
 *   ...mlp.{gate,up,down}_proj.weight or mlp.gate_up_proj.weight,
 * and lm_head (NULL: tied to embed_tokens). */
typedef struct vd_decoder_spec {
	uint32_t struct_size;
	char prefix[128];
	char lm_head[128];    /* full name, "" = tied */
	char embed_name[128]; /* full name; "" = <prefix>embed_tokens.weight */
	int vocab_size;
	int hidden_size;
	int intermediate_size;
	int num_layers;
	int num_heads;
	int num_kv_heads;
	int head_dim;
	float rms_norm_eps;
	bool fused_qkv;       /* qkv_proj in the checkpoint */
	bool fused_gate_up;   /* gate_up_proj in the checkpoint */
	bool qkv_bias;        /* q/k/v biases (Qwen2) */
	int max_position_embeddings;
	/* rope */
	vd_rope_type rope_type;
	double rope_theta;
	float partial_rotary_factor; /* 1.0 = whole head */
	int mrope_section[3];
	int original_max_position_embeddings;
	int n_rope_factors;          /* rot_dim/2 when longrope */
	float short_factor[VD_MAX_ROPE_FACTORS];
	float long_factor[VD_MAX_ROPE_FACTORS];
	float attention_factor;      /* longrope mscale; 0 = derive as HF does */
} vd_decoder_spec;

/* Fill spec from an HF text config node (LlamaConfig, Phi3Config,
 * Qwen2Config keys; rope_scaling or v5 rope_parameters), applying the
 * transformers class defaults of `model_type` ("llama", "phi3", "qwen2",
 * "mistral") for missing keys. prefix/lm_head are left for the caller. */
vd_status vd_decoder_spec_from_hf(const vd_json *text_cfg, const char *model_type,
				  vd_decoder_spec *spec);

typedef struct vd_decoder vd_decoder;

/* Upload weights to be's device and build the decoder. Missing tensors are
 * VD_ERR_NOT_FOUND naming them. weights are borrowed for the call only. */
vd_status vd_decoder_create(vd_backend *be, const vd_weights *w,
			    const vd_decoder_spec *spec, vd_decoder **out);
void vd_decoder_destroy(vd_decoder *d);
const vd_decoder_spec *vd_decoder_get_spec(const vd_decoder *d);

/* out (n, hidden) = embed_tokens[ids]. */
vd_status vd_decoder_embed(vd_decoder *d, const int32_t *ids, int64_t n, vd_tensor *out);

/* One forward pass over a flattened batch.
 *   x          (T, hidden) input embeddings; clobbered
 *   positions  (P, T) host int32; P = 3 for M-RoPE, else 1
 *   rope_table (T) host int32 or NULL: longrope short(0)/long(1) per token
 *   meta       paged-attention metadata for the T rows
 *   k_cache[l], v_cache[l]  (num_blocks, block_size, kv_heads, head_dim)
 *   logit_rows (n_logits) rows of x whose logits are wanted
 *   logits     (n_logits, vocab) f32 output, allocated by the caller */
vd_status vd_decoder_forward(vd_decoder *d, vd_tensor *x, const int32_t *positions,
			     const int32_t *rope_table, const vd_attn_meta *meta,
			     vd_tensor *k_cache, vd_tensor *v_cache,
			     const int32_t *logit_rows, int n_logits, vd_tensor *logits);

/* -------------------------------------------------------------------- CLIP */

typedef struct vd_clip_config {
	int hidden_size;
	int intermediate_size;
	int num_layers;        /* in the checkpoint */
	int num_heads;
	int image_size;
	int patch_size;
	int num_channels;
	float layer_norm_eps;
	vd_act hidden_act;     /* quick_gelu for CLIP ViT-L */
} vd_clip_config;

/* Fill from a CLIPVisionConfig node with the transformers defaults. */
vd_status vd_clip_config_from_hf(const vd_json *vision_cfg, vd_clip_config *cfg);

typedef struct vd_clip vd_clip;

/* Build a CLIP vision tower from weights under prefix (e.g.
 * "vision_tower.vision_model."): embeddings.{patch_embedding,class_embedding,
 * position_embedding}, pre_layrnorm, encoder.layers.<i>.*. Only the first
 * `run_layers` encoder layers are loaded and run (feature layer -2 of 24 ->
 * 23); post_layernorm is not used. */
vd_status vd_clip_create(vd_backend *be, const vd_weights *w, const char *prefix,
			 const vd_clip_config *cfg, int run_layers, vd_clip **out);
void vd_clip_destroy(vd_clip *c);
/* pixels: host f32 (n, 3, S, S). out: backend tensor (n * (1 + (S/p)^2),
 * hidden) allocated here and owned by the caller: the hidden state after
 * run_layers layers, CLS row first for each image. */
vd_status vd_clip_forward(vd_clip *c, const float *pixels, int n, vd_tensor *out);

/* ------------------------------------------------------------ Qwen2-VL ViT */

typedef struct vd_qwen2_vit_config {
	int depth;
	int embed_dim;
	int hidden_size;        /* merger output width (the LLM's hidden) */
	int num_heads;
	int mlp_dim;            /* embed_dim * mlp_ratio */
	int in_chans;
	int patch_size;
	int temporal_patch_size;
	int spatial_merge_size;
	float layer_norm_eps;   /* 1e-6, fixed in transformers */
	vd_act hidden_act;      /* quick_gelu by default */
} vd_qwen2_vit_config;

/* Fill from a Qwen2VLVisionConfig node with the transformers defaults. */
vd_status vd_qwen2_vit_config_from_hf(const vd_json *vision_cfg, vd_qwen2_vit_config *cfg);

typedef struct vd_qwen2_vit vd_qwen2_vit;

/* Build the tower from weights under prefix ("visual." or "model.visual."):
 * patch_embed.proj.weight (the Conv3d kernel, used as a (embed, C*T*p*p)
 * matrix), blocks.<i>.{norm1,norm2,attn.qkv,attn.proj,mlp.fc1,mlp.fc2} and
 * merger.{ln_q,mlp.0,mlp.2}. Weights are borrowed for the call only. */
vd_status vd_qwen2_vit_create(vd_backend *be, const vd_weights *w, const char *prefix,
			      const vd_qwen2_vit_config *cfg, vd_qwen2_vit **out);
void vd_qwen2_vit_destroy(vd_qwen2_vit *v);
/* Vision blocks over n images.
 *   pixels    host f32 (N, C*T*p*p), N = sum of t*h*w, each image's patches
 *             in merge-block order as Qwen2VLImageProcessor emits them
 *   grid_thw  host (n, 3) patch grids; h and w multiples of the merge size
 * out: backend tensor (N, embed_dim) allocated here and owned by the
 * caller: the hidden state after the last block (the merger's input);
 * attention stays inside each frame of each image. */
vd_status vd_qwen2_vit_forward(vd_qwen2_vit *v, const float *pixels, const int64_t *grid_thw,
			       int n, vd_tensor *out);
/* PatchMerger: x (N, embed_dim) -> out (N / merge^2, hidden_size), out
 * allocated here and owned by the caller: ln_q, merge^2 consecutive rows
 * joined into one, mlp.0, GELU, mlp.2. */
vd_status vd_qwen2_vit_merge(vd_qwen2_vit *v, const vd_tensor *x, vd_tensor *out);

#ifdef __cplusplus
}
#endif
#endif
