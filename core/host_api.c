/* The host API table handed to plugins: thin, stable entry points into the
 * core. Append-only; each member's ABI minor is noted in plugin.h. */
#include <stdarg.h>
#include <stdio.h>

#include "core/expansion.h"
#include "core/registry.h"

static vd_status host_errorf(vd_status s, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return vd_errorf(s, "%s", buf);
}

static void host_log(vd_log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warning", "error" };
	va_list ap;

	if (level < VD_LOG_INFO)
		return;
	fprintf(stderr, "vllmd: %s: ", names[level & 3]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const vd_host_api host_api = {
	.struct_size = sizeof(vd_host_api),
	.abi_major = VD_PLUGIN_ABI_MAJOR,
	.abi_minor = VD_PLUGIN_ABI_MINOR,
	.errorf = host_errorf,
	.log = host_log,
	.json_get = vd_json_get,
	.json_int = vd_json_int,
	.json_num = vd_json_num,
	.json_bool = vd_json_bool,
	.json_str = vd_json_str,
	.json_len = vd_json_len,
	.json_at = vd_json_at,
	.json_number_value = vd_json_number_value,
	.json_string_value = vd_json_string_value,
	.weights_get = vd_weights_get,
	.weights_has = vd_weights_has,
	.tokenize = vd_tokenizer_encode,
	.token_to_id = vd_tokenizer_token_to_id,
	.image_resize = vd_image_resize,
	.image_crop = vd_image_crop,
	.image_to_planes = vd_image_to_planes,
	.image_free = vd_image_free,
	.decoder_spec_from_hf = vd_decoder_spec_from_hf,
	.clip_config_from_hf = vd_clip_config_from_hf,
	.clip_create = vd_clip_create,
	.clip_destroy = vd_clip_destroy,
	.clip_forward = vd_clip_forward,
	.exp_push = vd_expansion_push,
	.exp_push_image = vd_expansion_push_image,
	.exp_positions = vd_expansion_positions,
	.exp_len = vd_expansion_len,
	.qwen2_vit_config_from_hf = vd_qwen2_vit_config_from_hf,
	.qwen2_vit_create = vd_qwen2_vit_create,
	.qwen2_vit_destroy = vd_qwen2_vit_destroy,
	.qwen2_vit_forward = vd_qwen2_vit_forward,
	.qwen2_vit_merge = vd_qwen2_vit_merge,
	.image_resize_crop = vd_image_resize_crop,
};

const vd_host_api *vd_host_api_get(void)
{
	return &host_api;
}
