/* The engine's options: the table below is the single source of every
 * YAML key, CLI flag and --help line of what the engine reads, and a
 * joined table (the daemon's, server/options.c) goes through the same
 * code. Values are parsed from text by one parser per type, whatever the
 * source (default, environment, YAML, CLI); a value is swapped in only
 * after it parsed, so a failed set leaves the previous value. The only
 * module that includes libyaml. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <yaml.h>

#include "core/config.h"
#include "vllmd/llm.h"
#include "vllmd/json.h"

#define OFF(field) offsetof(vd_config, field)

static const vd_config_choice dtype_choices[] = {
	{ "auto", VD_CFG_DTYPE_AUTO },         { "float32", VD_CFG_DTYPE_FLOAT32 },
	{ "bfloat16", VD_CFG_DTYPE_BFLOAT16 }, { "float16", VD_CFG_DTYPE_FLOAT16 },
	/* vLLM's aliases */
	{ "float", VD_CFG_DTYPE_FLOAT32 },     { "half", VD_CFG_DTYPE_FLOAT16 },
	{ NULL, 0 },
};
static const vd_config_choice kv_dtype_choices[] = {
	{ "auto", VD_CFG_KV_AUTO }, { "fp8", VD_CFG_KV_FP8 }, { "fp8_e4m3", VD_CFG_KV_FP8 },
	{ NULL, 0 },
};
static const vd_config_choice device_choices[] = {
	{ "auto", VD_CFG_DEVICE_AUTO }, { "cpu", VD_CFG_DEVICE_CPU },
	{ "cuda", VD_CFG_DEVICE_CUDA }, { NULL, 0 },
};
#define RANGE VD_CONFIG_RANGE
#define UNBOUNDED VD_CONFIG_UNBOUNDED
#define AT_LEAST VD_CONFIG_AT_LEAST

static const vd_config_option options[] = {
	/* model */
	{ .key = "model", .flag = "--model", .type = VD_CONFIG_STRING, .offset = OFF(model),
	  .help = "Model checkpoint directory in the Hugging Face hub layout (config.json, "
		  "*.safetensors, tokenizer files). Required." },
	{ .key = "tokenizer", .flag = "--tokenizer", .type = VD_CONFIG_STRING,
	  .offset = OFF(tokenizer),
	  .help = "Tokenizer directory. Default: the model directory." },
	{ .key = "plugin_dir", .flag = "--plugin-dir", .type = VD_CONFIG_STRING,
	  .offset = OFF(plugin_dir),
	  .help = "Directory of model-family plugins (*.so). Default: $VD_PLUGIN_DIR, "
		  "else the installed plugin directory." },
	{ .key = "dtype", .flag = "--dtype", .type = VD_CONFIG_CHOICE, .def = "auto",
	  .offset = OFF(dtype), .choices = dtype_choices,
	  .help = "Weight, activation and KV-cache dtype; auto = bfloat16 on a GPU "
		  "(float16 for float16 checkpoints) and float32 on the CPU, which "
		  "computes in float32 only." },
	{ .key = "device", .flag = "--device", .type = VD_CONFIG_CHOICE, .def = "auto",
	  .offset = OFF(device), .choices = device_choices,
	  .help = "Compute backend; auto = cuda when a usable GPU is found, else cpu." },
	{ .key = "max_model_len", .flag = "--max-model-len", .type = VD_CONFIG_INT, .def = "0",
	  .offset = OFF(max_model_len), RANGE(0, 1073741824),
	  .help = "Context length in tokens (prompt plus output); 0 = the model's "
		  "max_position_embeddings." },
	{ .key = "limit_mm_per_prompt", .flag = "--limit-mm-per-prompt",
	  .type = VD_CONFIG_MM_LIMITS, .offset = OFF(limit_mm_per_prompt),
	  .help = "Most multimodal items per prompt for each modality, as image=2 (or "
		  "image=2,video=0) or JSON {\"image\": 2}. Unset: the model family's "
		  "default." },
	{ .key = "generation_config", .flag = "--generation-config", .type = VD_CONFIG_STRING,
	  .def = "auto", .offset = OFF(generation_config),
	  .help = "Default sampling parameters: auto = the model's generation_config.json, "
		  "vllm = vLLM's built-in defaults, or a folder holding a "
		  "generation_config.json." },
	{ .key = "trust_remote_code", .flag = "--trust-remote-code", .type = VD_CONFIG_BOOL,
	  .def = "false", .offset = OFF(trust_remote_code),
	  .help = "Accepted for vLLM compatibility and ignored: vllmd never runs code that "
		  "ships with a checkpoint." },
	/* scheduler and memory */
	{ .key = "max_num_seqs", .flag = "--max-num-seqs", .type = VD_CONFIG_INT, .def = "256",
	  .offset = OFF(max_num_seqs), RANGE(1, 1048576),
	  .help = "Most requests scheduled in one engine step." },
	{ .key = "max_num_batched_tokens", .flag = "--max-num-batched-tokens",
	  .type = VD_CONFIG_INT, .def = "0", .offset = OFF(max_num_batched_tokens),
	  RANGE(0, 1073741824),
	  .help = "Token budget of one engine step (prefill chunks plus decodes); 0 = auto." },
	{ .key = "block_size", .flag = "--block-size", .type = VD_CONFIG_INT, .def = "16",
	  .offset = OFF(block_size), RANGE(1, 1024),
	  .help = "Tokens per KV-cache block." },
	{ .key = "kv_cache_dtype", .flag = "--kv-cache-dtype", .type = VD_CONFIG_CHOICE,
	  .def = "auto", .offset = OFF(kv_cache_dtype), .choices = kv_dtype_choices,
	  .help = "KV-cache element type: auto = the compute dtype; fp8 (= fp8_e4m3) = "
		  "OCP FP8 E4M3, half the memory and reads of bfloat16, stored with scale "
		  "1.0 as vLLM does without calibrated scales." },
	{ .key = "gpu_memory_utilization", .flag = "--gpu-memory-utilization",
	  .type = VD_CONFIG_FLOAT, .def = "0.9", .offset = OFF(gpu_memory_utilization),
	  RANGE(0, 1), .min_open = true,
	  .help = "Fraction of GPU memory vllmd may use in all; what a profiled worst-case "
		  "step leaves of it becomes KV-cache blocks." },
	{ .key = "kv_cache_memory", .flag = "--kv-cache-memory", .alias = "kv_cache_memory_bytes",
	  .type = VD_CONFIG_SIZE, .def = "0", .offset = OFF(kv_cache_memory),
	  .help = "KV-cache size (e.g. 4GiB); when set, it replaces the size derived from "
		  "gpu_memory_utilization. 0 = auto." },
	{ .key = "enable_prefix_caching", .flag = "--enable-prefix-caching",
	  .type = VD_CONFIG_BOOL, .def = "true", .offset = OFF(enable_prefix_caching),
	  .help = "Reuse the KV blocks of identical prompt prefixes (image content is part "
		  "of the key)." },
	{ .key = "enforce_eager", .flag = "--enforce-eager", .type = VD_CONFIG_BOOL,
	  .def = "false", .offset = OFF(enforce_eager),
	  .help = "Run every step op by op; by default a GPU replays decode-only steps of "
		  "up to max_num_seqs sequences and 8192-token contexts as recorded step "
		  "graphs (CUDA graphs)." },
	{ .key = "num_threads", .flag = "--num-threads", .type = VD_CONFIG_INT, .def = "0",
	  .offset = OFF(num_threads), RANGE(0, 4096),
	  .help = "Worker threads of the CPU backend; 0 = one per core." },
	{ .key = "input_workers", .flag = "--input-workers", .type = VD_CONFIG_INT, .def = "0",
	  .offset = OFF(input_workers), RANGE(0, 1024),
	  .help = "Threads of the input stage, which prepares every request before the "
		  "engine admits it (image decode, the family's preprocessing and hashing, "
		  "prompt tokenization and placeholder expansion); 0 = one per core." },
	{ .key = "seed", .flag = "--seed", .type = VD_CONFIG_INT, .def = "0",
	  .offset = OFF(seed),
	  .help = "Random seed of the engine; requests without their own seed draw from it." },
	{ .key = "max_image_pixels", .flag = "--max-image-pixels", .type = VD_CONFIG_INT,
	  .def = "89478485", .offset = OFF(max_image_pixels), AT_LEAST(1),
	  .help = "Largest decoded image (width x height) accepted, like PIL's "
		  "Image.MAX_IMAGE_PIXELS." },
};
#define N_OPTIONS ((int)(sizeof(options) / sizeof(options[0])))

static const char *const modalities[] = { "image", "video", "audio" };

const vd_config_option *vd_config_options(int *n)
{
	*n = N_OPTIONS;
	return options;
}

/* c's options, the engine's then the joined table's: i in [0, n_all(c)). */
static int n_all(const vd_config *c)
{
	return N_OPTIONS + c->n_ext;
}

static const vd_config_option *opt_at(const vd_config *c, int i)
{
	return i < N_OPTIONS ? &options[i] : &c->ext_options[i - N_OPTIONS];
}

/* ---- names ---- */

static char fold(char ch)
{
	return ch == '-' ? '_' : ch;
}

/* name (first len bytes, leading "--" allowed) equals key, '-' == '_'. */
static bool name_is(const char *name, size_t len, const char *key)
{
	if (len >= 2 && name[0] == '-' && name[1] == '-') {
		name += 2;
		len -= 2;
	}
	if (key == NULL || strlen(key) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (fold(name[i]) != key[i])
			return false;
	}
	return true;
}

/* Option named by the first len bytes of name; *negated set for "no-<bool>". */
static const vd_config_option *find_n(const vd_config *c, const char *name, size_t len,
				      bool *negated)
{
	const char *bare = name;
	size_t blen = len;

	*negated = false;
	for (int i = 0; i < n_all(c); i++)
		if (name_is(name, len, opt_at(c, i)->key) || name_is(name, len, opt_at(c, i)->alias))
			return opt_at(c, i);
	if (blen >= 2 && bare[0] == '-' && bare[1] == '-') {
		bare += 2;
		blen -= 2;
	}
	if (blen > 3 && (strncmp(bare, "no-", 3) == 0 || strncmp(bare, "no_", 3) == 0)) {
		for (int i = 0; i < n_all(c); i++) {
			const vd_config_option *o = opt_at(c, i);

			if (o->type == VD_CONFIG_BOOL && (name_is(bare + 3, blen - 3, o->key) ||
							  name_is(bare + 3, blen - 3, o->alias))) {
				*negated = true;
				return o;
			}
		}
	}
	return NULL;
}

/* Edit distance with adjacent transpositions, on '-'/'_'-folded names. */
static size_t distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), d[64][64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			char x = fold(a[i - 1]), y = fold(b[j - 1]);
			size_t best = d[i - 1][j - 1] + (x != y);

			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && x == fold(b[j - 2]) && fold(a[i - 2]) == y &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[la][lb];
}

/* The closest of names[] to name when close enough to be a typo, or NULL. */
static const char *closest(const char *name, const char *const *names, int n)
{
	size_t len = strlen(name), limit = len < 4 ? 1 : len < 9 ? 2 : 3, best = limit + 1;
	const char *pick = NULL;

	for (int i = 0; i < n; i++) {
		size_t dd = distance(name, names[i]);

		if (dd < best) {
			best = dd;
			pick = names[i];
		}
	}
	return pick;
}

/* " (did you mean 'x'?)" for the option key closest to name, or "". The
 * buffer is static per thread: use before the next call. */
static const char *suggest(const vd_config *c, const char *name, bool as_flag)
{
	static _Thread_local char buf[96];
	const char **keys = malloc(2 * (size_t)n_all(c) * sizeof(*keys));
	const char *bare = strncmp(name, "--", 2) == 0 ? name + 2 : name, *pick;
	int n = 0;

	if (keys == NULL)
		return "";
	for (int i = 0; i < n_all(c); i++) {
		keys[n++] = opt_at(c, i)->key;
		if (opt_at(c, i)->alias != NULL)
			keys[n++] = opt_at(c, i)->alias;
	}
	pick = closest(bare, keys, n);
	free(keys);
	if (pick == NULL)
		return "";
	if (!as_flag) {
		snprintf(buf, sizeof(buf), " (did you mean '%s'?)", pick);
	} else {
		int k = snprintf(buf, sizeof(buf), " (did you mean '--");

		for (const char *p = pick; *p != '\0' && k < (int)sizeof(buf) - 8; p++)
			buf[k++] = *p == '_' ? '-' : *p;
		snprintf(buf + k, sizeof(buf) - (size_t)k, "'?)");
	}
	return buf;
}

/* ---- value parsers: text -> value, no side effects ---- */

static bool parse_int(const char *s, int64_t *out)
{
	char *end;
	long long v;

	if (!(isdigit((unsigned char)s[0]) ||
	      ((s[0] == '-' || s[0] == '+') && isdigit((unsigned char)s[1]))))
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = v;
	return true;
}

static bool parse_float(const char *s, double *out)
{
	char *end;
	double v;

	if (!(isdigit((unsigned char)s[0]) || s[0] == '.' || s[0] == '-' || s[0] == '+'))
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || end == s || !isfinite(v))
		return false;
	*out = v;
	return true;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (int i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/* Bytes from "1048576", "64MiB", "1.5GB", "512k" (vLLM's convention: lower
 * k/m/g/t are powers of 1000, upper K/M/G/T powers of 1024). */
static bool parse_size(const char *s, int64_t *out)
{
	static const struct { const char *unit; uint64_t mult; } units[] = {
		{ "", 1 }, { "B", 1 },
		{ "k", 1000ull }, { "kB", 1000ull }, { "KB", 1000ull },
		{ "K", 1ull << 10 }, { "KiB", 1ull << 10 },
		{ "m", 1000000ull }, { "MB", 1000000ull },
		{ "M", 1ull << 20 }, { "MiB", 1ull << 20 },
		{ "g", 1000000000ull }, { "GB", 1000000000ull },
		{ "G", 1ull << 30 }, { "GiB", 1ull << 30 },
		{ "t", 1000000000000ull }, { "TB", 1000000000000ull },
		{ "T", 1ull << 40 }, { "TiB", 1ull << 40 },
	};
	const char *p = s, *frac = NULL;
	uint64_t whole = 0, mult = 0, total;
	double part = 0;

	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++)
		if (__builtin_mul_overflow(whole, 10, &whole) ||
		    __builtin_add_overflow(whole, (uint64_t)(*p - '0'), &whole))
			return false;
	if (*p == '.') {
		frac = p;
		for (p++; isdigit((unsigned char)*p); p++)
			;
		if (p == frac + 1)
			return false;
		part = strtod(frac, NULL);
	}
	while (*p == ' ')
		p++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(p, units[i].unit) == 0)
			mult = units[i].mult;
	if (mult == 0)
		return false;
	if (__builtin_mul_overflow(whole, mult, &total) ||
	    __builtin_add_overflow(total, (uint64_t)(part * (double)mult + 0.5), &total) ||
	    total > (uint64_t)INT64_MAX)
		return false;
	*out = (int64_t)total;
	return true;
}

static const char *type_want(const vd_config_option *o)
{
	switch (o->type) {
	case VD_CONFIG_STRING: return "a string";
	case VD_CONFIG_STRING_LIST: return "a string or a list of strings";
	case VD_CONFIG_INT: return "an integer";
	case VD_CONFIG_FLOAT: return "a number";
	case VD_CONFIG_BOOL: return "true or false";
	case VD_CONFIG_SIZE: return "a size in bytes (e.g. 1048576, 512MiB, 4GiB, 1.5GB)";
	case VD_CONFIG_CHOICE: return "one of the listed choices";
	case VD_CONFIG_MM_LIMITS: return "modality=count pairs (image=2) or a JSON object";
	}
	return "?";
}

/* Where a value came from, for messages: "file:line: " or "". */
struct origin {
	const char *prefix;
	const char *shown; /* option as the user spelled it */
};

static vd_status bad_value(const struct origin *at, const char *want, const char *got)
{
	return vd_errorf(VD_ERR_INVALID_ARG, "%soption '%s': expected %s, got '%s'", at->prefix,
			 at->shown, want, got);
}

/* A YAML value of the wrong kind: got describes it, it is not a quote. */
static vd_status wrong_shape(const struct origin *at, const char *want, const char *got)
{
	return vd_errorf(VD_ERR_INVALID_ARG, "%soption '%s': expected %s, got %s", at->prefix,
			 at->shown, want, got);
}

static vd_status out_of_range(const struct origin *at, const vd_config_option *o,
			      const char *got)
{
	if (o->max >= UNBOUNDED)
		return vd_errorf(VD_ERR_INVALID_ARG, "%soption '%s': %s is below the minimum %.15g",
				 at->prefix, at->shown, got, o->min);
	return vd_errorf(VD_ERR_INVALID_ARG, "%soption '%s': %s is out of range %s%.15g, %.15g]",
			 at->prefix, at->shown, got, o->min_open ? "(" : "[", o->min, o->max);
}

static bool in_range(const vd_config_option *o, double v)
{
	if (!o->ranged)
		return true;
	return (o->min_open ? v > o->min : v >= o->min) && v <= o->max;
}

static void strlist_clear(vd_config_strlist *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

vd_status vd_config_strlist_push(vd_config_strlist *l, const char *s)
{
	char **p = realloc(l->items, (size_t)(l->n + 1) * sizeof(*p));

	if (p == NULL)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	l->items = p;
	l->items[l->n] = strdup(s);
	if (l->items[l->n] == NULL)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	l->n++;
	return VD_OK;
}

/* Parse a string list from text: a JSON array of strings, or one value. */
static vd_status parse_strlist(const struct origin *at, const char *s, vd_config_strlist *out)
{
	vd_json *j = NULL;
	vd_status st = VD_OK;

	if (s[0] != '[')
		return vd_config_strlist_push(out, s);
	if (vd_json_parse(s, strlen(s), &j) != VD_OK || !vd_json_is_array(j))
		st = bad_value(at, "a JSON array of strings", s);
	for (int i = 0; st == VD_OK && i < vd_json_len(j); i++) {
		const char *v = vd_json_string_value(vd_json_at(j, i));

		st = v != NULL ? vd_config_strlist_push(out, v) : bad_value(at, "a JSON array of strings", s);
	}
	vd_json_free(j);
	return st;
}

static vd_status mm_set(const struct origin *at, vd_config_mm_limits *m, const char *name,
			size_t name_len, const char *count)
{
	int64_t v;
	char nm[32];

	snprintf(nm, sizeof(nm), "%.*s", (int)(name_len < 31 ? name_len : 31), name);
	if (!parse_int(count, &v) || v < 0)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%soption '%s': count for '%s' must be a non-negative integer, "
				 "got '%s'", at->prefix, at->shown, nm, count);
	for (int i = 0; i < 3; i++) {
		if (strlen(modalities[i]) == name_len && strncmp(modalities[i], name, name_len) == 0) {
			int64_t *f[3] = { &m->image, &m->video, &m->audio };

			*f[i] = v;
			return VD_OK;
		}
	}
	{
		const char *pick = closest(nm, modalities, 3);

		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%soption '%s': unknown modality '%s' (expected image, video or "
				 "audio)%s%s%s", at->prefix, at->shown, nm,
				 pick ? "; did you mean '" : "", pick ? pick : "", pick ? "'?" : "");
	}
}

/* image=2[,video=1] or {"image": 2}. */
static vd_status parse_mm(const struct origin *at, const char *s, vd_config_mm_limits *m)
{
	vd_status st = VD_OK;
	vd_json *j = NULL;
	char num[32];

	m->image = m->video = m->audio = -1;
	if (s[0] == '{') {
		if (vd_json_parse(s, strlen(s), &j) != VD_OK || !vd_json_is_object(j))
			st = bad_value(at, "a JSON object like {\"image\": 2}", s);
		for (int i = 0; st == VD_OK && i < vd_json_len(j); i++) {
			const vd_json *v = vd_json_at(j, i);
			const char *k = vd_json_key_at(j, i);

			if (vd_json_is_number(v))
				snprintf(num, sizeof(num), "%.17g", vd_json_number_value(v, -1));
			else
				snprintf(num, sizeof(num), "%s", vd_json_is_string(v) ?
					 vd_json_string_value(v) : "(not a number)");
			st = mm_set(at, m, k, strlen(k), num);
		}
		vd_json_free(j);
		return st;
	}
	if (s[0] == '\0')
		return bad_value(at, "modality=count pairs like image=2", s);
	for (const char *p = s; st == VD_OK && *p != '\0';) {
		const char *comma = strchr(p, ','), *eq;
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		eq = memchr(p, '=', len);
		if (eq == NULL || len - (size_t)(eq - p) - 1 >= sizeof(num))
			return bad_value(at, "modality=count pairs like image=2", s);
		snprintf(num, sizeof(num), "%.*s", (int)(len - (size_t)(eq - p) - 1), eq + 1);
		st = mm_set(at, m, p, (size_t)(eq - p), num);
		p += len;
		if (*p == ',')
			p++;
	}
	return st;
}

/* o's field: in c, or in the joined table's struct. */
static void *field(vd_config *c, const vd_config_option *o)
{
	if (c->n_ext > 0 && o >= c->ext_options && o < c->ext_options + c->n_ext)
		return (char *)c->ext_base + o->offset;
	return (char *)c + o->offset;
}

/* Clear an option's field to "unset" (owned memory freed). */
static void clear_field(vd_config *c, const vd_config_option *o)
{
	void *f = field(c, o);

	switch (o->type) {
	case VD_CONFIG_STRING:
		free(*(char **)f);
		*(char **)f = NULL;
		break;
	case VD_CONFIG_STRING_LIST:
		strlist_clear(f);
		break;
	case VD_CONFIG_MM_LIMITS: {
		vd_config_mm_limits *m = f;

		m->image = m->video = m->audio = -1;
		break;
	}
	case VD_CONFIG_INT:
	case VD_CONFIG_SIZE:
		*(int64_t *)f = 0;
		break;
	case VD_CONFIG_FLOAT:
		*(double *)f = 0;
		break;
	case VD_CONFIG_BOOL:
		*(bool *)f = false;
		break;
	case VD_CONFIG_CHOICE:
		*(int *)f = 0;
		break;
	}
}

/* Parse text as option o and store it; on error the field is unchanged. */
static vd_status set_text(vd_config *c, const vd_config_option *o, const char *s,
			  const struct origin *at)
{
	void *f = field(c, o);
	vd_status st;
	int64_t i;
	double d;
	bool b;

	switch (o->type) {
	case VD_CONFIG_STRING: {
		char *dup = strdup(s);

		if (dup == NULL)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
		free(*(char **)f);
		*(char **)f = dup;
		return VD_OK;
	}
	case VD_CONFIG_STRING_LIST: {
		vd_config_strlist l = { NULL, 0 };

		st = parse_strlist(at, s, &l);
		if (st != VD_OK) {
			strlist_clear(&l);
			return st;
		}
		strlist_clear(f);
		*(vd_config_strlist *)f = l;
		return VD_OK;
	}
	case VD_CONFIG_INT:
		if (!parse_int(s, &i))
			return bad_value(at, "an integer", s);
		if (!in_range(o, (double)i))
			return out_of_range(at, o, s);
		*(int64_t *)f = i;
		return VD_OK;
	case VD_CONFIG_SIZE:
		if (!parse_size(s, &i))
			return bad_value(at, type_want(o), s);
		if (!in_range(o, (double)i))
			return out_of_range(at, o, s);
		*(int64_t *)f = i;
		return VD_OK;
	case VD_CONFIG_FLOAT:
		if (!parse_float(s, &d))
			return bad_value(at, "a number", s);
		if (!in_range(o, d))
			return out_of_range(at, o, s);
		*(double *)f = d;
		return VD_OK;
	case VD_CONFIG_BOOL:
		if (!parse_bool(s, &b))
			return bad_value(at, "true or false", s);
		*(bool *)f = b;
		return VD_OK;
	case VD_CONFIG_CHOICE: {
		char want[160];
		size_t k = 0;

		for (const vd_config_choice *ch = o->choices; ch->name != NULL; ch++) {
			if (strcasecmp(ch->name, s) == 0) {
				*(int *)f = ch->value;
				return VD_OK;
			}
			k += (size_t)snprintf(want + k, sizeof(want) - k, "%s%s",
					      k ? ", " : "one of ", ch->name);
		}
		return bad_value(at, want, s);
	}
	case VD_CONFIG_MM_LIMITS: {
		vd_config_mm_limits m;

		st = parse_mm(at, s, &m);
		if (st == VD_OK)
			*(vd_config_mm_limits *)f = m;
		return st;
	}
	}
	return vd_errorf(VD_ERR_INTERNAL, "option '%s' has no type", o->key);
}

/* Back to the default (environment first). */
static vd_status reset_option(vd_config *c, const vd_config_option *o)
{
	const char *env = o->env != NULL ? getenv(o->env) : NULL;
	char prefix[96];
	struct origin at = { "", o->key };

	clear_field(c, o);
	if (env != NULL && env[0] != '\0') {
		snprintf(prefix, sizeof(prefix), "environment variable %s: ", o->env);
		at.prefix = prefix;
		return set_text(c, o, env, &at);
	}
	return o->def != NULL ? set_text(c, o, o->def, &at) : VD_OK;
}

vd_status vd_config_init_ext(vd_config *c, const vd_config_option *ext, int n_ext,
			     void *ext_base, const char *title)
{
	vd_status st;

	memset(c, 0, sizeof(*c));
	c->ext_title = title;
	c->ext_options = ext;
	c->n_ext = ext != NULL && ext_base != NULL ? n_ext : 0;
	c->ext_base = ext_base;
	/* every field starts unset, so that an error midway leaves c freeable */
	for (int i = N_OPTIONS; i < n_all(c); i++) {
		const vd_config_option *o = opt_at(c, i);
		void *f = field(c, o);

		switch (o->type) {
		case VD_CONFIG_STRING:
			*(char **)f = NULL;
			break;
		case VD_CONFIG_STRING_LIST:
			*(vd_config_strlist *)f = (vd_config_strlist){ NULL, 0 };
			break;
		default:
			break;
		}
	}
	for (int i = 0; i < n_all(c); i++) {
		st = reset_option(c, opt_at(c, i));
		if (st != VD_OK)
			return st;
	}
	return VD_OK;
}

vd_status vd_config_init_defaults(vd_config *c)
{
	return vd_config_init_ext(c, NULL, 0, NULL, NULL);
}

void vd_config_free(vd_config *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < n_all(c); i++)
		clear_field(c, opt_at(c, i));
	free(c->config_path);
	memset(c, 0, sizeof(*c));
}

vd_status vd_config_set(vd_config *c, const char *key_or_flag, const char *value)
{
	struct origin at = { "", key_or_flag };
	bool neg;
	const vd_config_option *o = find_n(c, key_or_flag, strlen(key_or_flag), &neg);

	if (o == NULL)
		return vd_errorf(VD_ERR_INVALID_ARG, "unknown option '%s'%s", key_or_flag,
				 suggest(c, key_or_flag, strncmp(key_or_flag, "--", 2) == 0));
	if (neg) {
		if (value != NULL)
			return vd_errorf(VD_ERR_INVALID_ARG, "option '%s' takes no value", key_or_flag);
		*(bool *)field(c, o) = false;
		return VD_OK;
	}
	if (value == NULL) {
		if (o->type != VD_CONFIG_BOOL)
			return vd_errorf(VD_ERR_INVALID_ARG, "option '%s' needs a value", key_or_flag);
		*(bool *)field(c, o) = true;
		return VD_OK;
	}
	return set_text(c, o, value, &at);
}

bool vd_config_option_is_flag(const vd_config *c, const char *key_or_flag)
{
	bool neg;
	const vd_config_option *o = find_n(c, key_or_flag, strlen(key_or_flag), &neg);

	return o != NULL && o->type == VD_CONFIG_BOOL;
}

/* ---- YAML ---- */

static bool yaml_is_null(const yaml_node_t *n)
{
	const char *v;

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	v = (const char *)n->data.scalar.value;
	return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

static int line_of(const yaml_node_t *n)
{
	return (int)n->start_mark.line + 1;
}

/* Apply one `key: value` pair whose option is o. */
static vd_status yaml_apply(vd_config *c, yaml_document_t *doc, const vd_config_option *o,
			    yaml_node_t *v, const char *path, const char *shown)
{
	char prefix[512];
	struct origin at = { prefix, shown };
	vd_status st;

	snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line_of(v));
	if (yaml_is_null(v))
		return reset_option(c, o);
	if (v->type == YAML_SCALAR_NODE)
		return set_text(c, o, (const char *)v->data.scalar.value, &at);
	if (v->type == YAML_SEQUENCE_NODE && o->type == VD_CONFIG_STRING_LIST) {
		vd_config_strlist l = { NULL, 0 };

		st = VD_OK;
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     st == VD_OK && it < v->data.sequence.items.top; it++) {
			yaml_node_t *item = yaml_document_get_node(doc, *it);

			snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line_of(item));
			st = item->type == YAML_SCALAR_NODE ?
				     vd_config_strlist_push(&l, (const char *)item->data.scalar.value) :
				     wrong_shape(&at, "a list of strings", "a nested list or mapping");
		}
		if (st == VD_OK) {
			strlist_clear(field(c, o));
			*(vd_config_strlist *)field(c, o) = l;
		} else {
			strlist_clear(&l);
		}
		return st;
	}
	if (v->type == YAML_MAPPING_NODE && o->type == VD_CONFIG_MM_LIMITS) {
		vd_config_mm_limits m = { -1, -1, -1 };

		st = VD_OK;
		for (yaml_node_pair_t *p = v->data.mapping.pairs.start;
		     st == VD_OK && p < v->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(doc, p->key);
			yaml_node_t *n = yaml_document_get_node(doc, p->value);

			snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line_of(k));
			if (k->type != YAML_SCALAR_NODE || n->type != YAML_SCALAR_NODE)
				st = wrong_shape(&at, "modality: count pairs", "a nested list or mapping");
			else
				st = mm_set(&at, &m, (const char *)k->data.scalar.value,
					    k->data.scalar.length, (const char *)n->data.scalar.value);
		}
		if (st == VD_OK)
			*(vd_config_mm_limits *)field(c, o) = m;
		return st;
	}
	return wrong_shape(&at, type_want(o), v->type == YAML_SEQUENCE_NODE ? "a list" : "a mapping");
}

/* The position of o among c's options (opt_at's index). */
static int opt_index(const vd_config *c, const vd_config_option *o)
{
	if (c->n_ext > 0 && o >= c->ext_options && o < c->ext_options + c->n_ext)
		return N_OPTIONS + (int)(o - c->ext_options);
	return (int)(o - options);
}

static vd_status yaml_apply_doc(vd_config *c, yaml_document_t *doc, const char *path)
{
	yaml_node_t *root = yaml_document_get_root_node(doc);
	int *seen;
	vd_status st = VD_OK;

	if (root == NULL || yaml_is_null(root))
		return VD_OK; /* an empty file (or a bare "---") sets nothing */
	if (root->type != YAML_MAPPING_NODE)
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "%s:%d: the top level must be a mapping of option: value",
				 path, line_of(root));
	seen = calloc((size_t)n_all(c), sizeof(*seen));
	if (seen == NULL)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
	     st == VD_OK && p < root->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *v = yaml_document_get_node(doc, p->value);
		const vd_config_option *o;
		const char *name;
		bool neg;
		int idx;

		if (k->type != YAML_SCALAR_NODE) {
			st = vd_errorf(VD_ERR_INVALID_ARG, "%s:%d: option names must be plain text",
				       path, line_of(k));
			break;
		}
		name = (const char *)k->data.scalar.value;
		o = strncmp(name, "--", 2) == 0 ? NULL : find_n(c, name, strlen(name), &neg);
		if (o == NULL || neg) {
			st = vd_errorf(VD_ERR_INVALID_ARG, "%s:%d: unknown option '%s'%s", path,
				       line_of(k), name, suggest(c, name, false));
			break;
		}
		idx = opt_index(c, o);
		if (seen[idx] != 0) {
			st = vd_errorf(VD_ERR_INVALID_ARG,
				       "%s:%d: option '%s' given twice (first at line %d)", path,
				       line_of(k), o->key, seen[idx]);
			break;
		}
		seen[idx] = line_of(k);
		st = yaml_apply(c, doc, o, v, path, name);
	}
	free(seen);
	return st;
}

vd_status vd_config_load_yaml(vd_config *c, const char *path)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	vd_status st;
	FILE *f = fopen(path, "rb");

	if (f == NULL)
		return vd_errorf(errno == ENOENT ? VD_ERR_NOT_FOUND : VD_ERR_IO,
				 "%s: cannot open config file: %s", path, strerror(errno));
	if (!yaml_parser_initialize(&parser)) {
		fclose(f);
		return vd_errorf(VD_ERR_NOMEM, "out of memory for the YAML parser");
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		st = vd_errorf(VD_ERR_INVALID_ARG, "%s:%zu: YAML syntax error: %s%s%s", path,
			       parser.problem_mark.line + 1,
			       parser.problem ? parser.problem : "malformed document",
			       parser.context ? " " : "", parser.context ? parser.context : "");
		goto out_parser;
	}
	st = yaml_apply_doc(c, &doc, path);
	yaml_document_delete(&doc);
	if (st != VD_OK)
		goto out_parser;
	/* at the end of the stream the loader yields an empty document; a
	 * second real one would silently be ignored, so refuse it */
	if (!yaml_parser_load(&parser, &doc)) {
		st = vd_errorf(VD_ERR_INVALID_ARG, "%s:%zu: YAML syntax error: %s", path,
			       parser.problem_mark.line + 1,
			       parser.problem ? parser.problem : "malformed document");
		goto out_parser;
	}
	if (yaml_document_get_root_node(&doc) != NULL &&
	    !yaml_is_null(yaml_document_get_root_node(&doc)))
		st = vd_errorf(VD_ERR_INVALID_ARG,
			       "%s:%d: a second YAML document ('---'); put every option in one "
			       "mapping", path, line_of(yaml_document_get_root_node(&doc)));
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
	fclose(f);
	return st;
}

/* ---- command line ---- */

/* How many argv words the option at argv[i] uses (itself included), or an
 * error; *o and *neg name the option (NULL for --config). */
static vd_status arg_words(const vd_config *c, int argc, char **argv, int i,
			   const vd_config_option **o, bool *neg, int *words)
{
	const char *a = argv[i], *eq = strchr(a, '=');
	size_t len = eq ? (size_t)(eq - a) : strlen(a);
	int j;

	*o = NULL;
	*neg = false;
	if (a[1] != '-')
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "unknown option '%s' (options are long, like --port 8000; see "
				 "--help)", a);
	if (name_is(a, len, "config")) {
		if (eq == NULL && i + 1 >= argc)
			return vd_errorf(VD_ERR_INVALID_ARG, "option '--config' needs a file name");
		*words = eq ? 1 : 2;
		return VD_OK;
	}
	*o = find_n(c, a, len, neg);
	if (*o == NULL) {
		char name[128];

		snprintf(name, sizeof(name), "%.*s", (int)len, a);
		return vd_errorf(VD_ERR_INVALID_ARG, "unknown option '%s'%s", name,
				 suggest(c, name, true));
	}
	if (*neg && eq != NULL)
		return vd_errorf(VD_ERR_INVALID_ARG, "option '%.*s' takes no value", (int)len, a);
	if (eq != NULL || *neg || (*o)->type == VD_CONFIG_BOOL) {
		*words = 1;
		return VD_OK;
	}
	if ((*o)->type == VD_CONFIG_STRING_LIST) {
		for (j = i + 1; j < argc && argv[j][0] != '-'; j++)
			;
		if (j == i + 1)
			return vd_errorf(VD_ERR_INVALID_ARG, "option '%s' needs at least one value", a);
		*words = j - i;
		return VD_OK;
	}
	if (i + 1 >= argc)
		return vd_errorf(VD_ERR_INVALID_ARG, "option '%s' needs a value", a);
	*words = 2;
	return VD_OK;
}

/* Apply the option at argv[i] that uses `words` words. */
static vd_status arg_apply(vd_config *c, char **argv, int i, int words,
			   const vd_config_option *o, bool neg)
{
	const char *a = argv[i], *eq = strchr(a, '=');
	char shown[128];
	struct origin at = { "", shown };
	vd_status st;

	snprintf(shown, sizeof(shown), "%.*s", (int)(eq ? (size_t)(eq - a) : strlen(a)), a);
	if (neg) {
		*(bool *)field(c, o) = false;
		return VD_OK;
	}
	if (eq != NULL)
		return set_text(c, o, eq + 1, &at);
	if (o->type == VD_CONFIG_BOOL) {
		*(bool *)field(c, o) = true;
		return VD_OK;
	}
	if (o->type == VD_CONFIG_STRING_LIST && words > 2) {
		vd_config_strlist l = { NULL, 0 };

		st = VD_OK;
		for (int k = 1; k < words && st == VD_OK; k++)
			st = vd_config_strlist_push(&l, argv[i + k]);
		if (st != VD_OK) {
			strlist_clear(&l);
			return st;
		}
		strlist_clear(field(c, o));
		*(vd_config_strlist *)field(c, o) = l;
		return VD_OK;
	}
	return set_text(c, o, argv[i + 1], &at);
}

#ifndef VD_DATA_DIR
#define VD_DATA_DIR "/usr/local/share/vllmd"
#endif

/* The --config file: name as given when it exists or names a path; a bare
 * name that is no file here is the installed configuration of that name
 * ($datadir/vllmd, where `make install` puts conf/). Malloc'ed; NULL when
 * out of memory. */
static char *find_config(const char *name)
{
	size_t n = strlen(VD_DATA_DIR) + strlen(name) + 2;
	char *in_data;

	if (strchr(name, '/') != NULL || access(name, F_OK) == 0)
		return strdup(name);
	in_data = malloc(n);
	if (in_data == NULL)
		return NULL;
	snprintf(in_data, n, "%s/%s", VD_DATA_DIR, name);
	if (access(in_data, F_OK) == 0)
		return in_data;
	free(in_data);
	return strdup(name); /* not found anywhere: the loader names it */
}

vd_status vd_config_parse_args(vd_config *c, int argc, char **argv, int *first_positional)
{
	char **opt = NULL, **pos = NULL;
	const char *config = NULL;
	int nopt = 0, npos = 0, i;
	char *dashdash = NULL;
	vd_status st = VD_OK;

	if (first_positional != NULL)
		*first_positional = argc;
	if (argc <= 1)
		return VD_OK;
	opt = malloc((size_t)argc * sizeof(*opt));
	pos = malloc((size_t)argc * sizeof(*pos));
	if (opt == NULL || pos == NULL) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* pass 1: check the shape of the command line, find --config,
	 * split option words from positional ones */
	for (i = 1; i < argc; i++) {
		const vd_config_option *o;
		const char *a = argv[i];
		bool neg;
		int words;

		if (strcmp(a, "--") == 0) {
			dashdash = argv[i];
			while (++i < argc)
				pos[npos++] = argv[i];
			break;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			c->help_requested = true;
			goto out;
		}
		if (a[0] != '-' || a[1] == '\0') {
			pos[npos++] = argv[i];
			continue;
		}
		st = arg_words(c, argc, argv, i, &o, &neg, &words);
		if (st != VD_OK)
			goto out;
		if (o == NULL) {
			if (config != NULL) {
				st = vd_errorf(VD_ERR_INVALID_ARG, "option '--config' given twice");
				goto out;
			}
			config = words == 2 ? argv[i + 1] : strchr(a, '=') + 1;
		}
		for (int k = 0; k < words; k++)
			opt[nopt++] = argv[i + k];
		i += words - 1;
	}
	if (npos > 0 && first_positional == NULL) {
		st = vd_errorf(VD_ERR_INVALID_ARG, "unexpected argument '%s' (options start with --)",
			       pos[0]);
		goto out;
	}
	/* options, then "--" if it was given (so no word is lost), then the
	 * positionals */
	memcpy(argv + 1, opt, (size_t)nopt * sizeof(*argv));
	if (dashdash != NULL)
		argv[1 + nopt] = dashdash;
	memcpy(argv + 1 + nopt + (dashdash != NULL), pos, (size_t)npos * sizeof(*argv));
	if (first_positional != NULL)
		*first_positional = 1 + nopt + (dashdash != NULL);
	if (config != NULL) {
		free(c->config_path);
		c->config_path = find_config(config);
		if (c->config_path == NULL) {
			st = vd_errorf(VD_ERR_NOMEM, "out of memory");
			goto out;
		}
		st = vd_config_load_yaml(c, c->config_path);
		if (st != VD_OK)
			goto out;
	}
	/* pass 2: flags override the file, in command-line order */
	for (i = 1; i < 1 + nopt; i++) {
		const vd_config_option *o;
		bool neg;
		int words;

		st = arg_words(c, 1 + nopt, argv, i, &o, &neg, &words);
		if (st == VD_OK && o != NULL)
			st = arg_apply(c, argv, i, words, o, neg);
		if (st != VD_OK)
			goto out;
		i += words - 1;
	}
out:
	free(opt);
	free(pos);
	return st;
}

vd_status vd_config_finalize(vd_config *c)
{
	if (c->model == NULL || c->model[0] == '\0')
		return vd_errorf(VD_ERR_INVALID_ARG,
				 "no model given: pass --model DIR (or the directory as the first "
				 "argument), or set 'model:' in the --config file");
	if (c->tokenizer == NULL) {
		c->tokenizer = strdup(c->model);
		if (c->tokenizer == NULL)
			return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	return VD_OK;
}

/* ---- help ---- */

/* Print text wrapped at 79 columns, every line indented by indent. */
static void print_wrapped(FILE *f, const char *text, int indent)
{
	const char *p = text;

	while (*p != '\0') {
		int width = 79 - indent, len = (int)strlen(p), cut = len;

		if (len > width) {
			for (cut = width; cut > 0 && p[cut] != ' '; cut--)
				;
			if (cut == 0)
				cut = width;
		}
		fprintf(f, "%*s%.*s\n", indent, "", cut, p);
		p += cut;
		while (*p == ' ')
			p++;
	}
}

static const char *metavar(const vd_config_option *o)
{
	switch (o->type) {
	case VD_CONFIG_STRING: return " TEXT";
	case VD_CONFIG_STRING_LIST: return " TEXT [TEXT ...]";
	case VD_CONFIG_INT: return " INT";
	case VD_CONFIG_FLOAT: return " NUM";
	case VD_CONFIG_BOOL: return "";
	case VD_CONFIG_SIZE: return " SIZE";
	case VD_CONFIG_CHOICE: return " CHOICE";
	case VD_CONFIG_MM_LIMITS: return " image=N";
	}
	return "";
}

static const char *type_name(const vd_config_option *o)
{
	switch (o->type) {
	case VD_CONFIG_STRING: return "string";
	case VD_CONFIG_STRING_LIST: return "list of strings";
	case VD_CONFIG_INT: return "integer";
	case VD_CONFIG_FLOAT: return "number";
	case VD_CONFIG_BOOL: return "boolean";
	case VD_CONFIG_SIZE: return "size";
	case VD_CONFIG_CHOICE: return "choice";
	case VD_CONFIG_MM_LIMITS: return "mapping";
	}
	return "?";
}

void vd_config_print_help(const vd_config *c, FILE *f)
{
	fputs("Usage: vllmd [--config FILE] [MODEL_DIR] [--option value ...]\n\n"
	      "Every option can be set in the YAML file given by --config (as its YAML key)\n"
	      "or on the command line (as its flag); command-line flags win.\n\n"
	      "  --config FILE\n"
	      "      YAML file whose top level maps option keys (below) to values.\n"
	      "  -h, --help\n"
	      "      Print this help.\n\n"
	      "Sizes: a byte count, or a number with KiB/MiB/GiB/TiB or K/M/G/T (powers of\n"
	      "1024), or kB/MB/GB/TB or k/m/g/t (powers of 1000): 4GiB, 512MiB, 1.5GB.\n"
	      "Booleans: --flag / --no-flag on the command line, true/false in YAML.\n\n"
	      "Engine options:\n", f);
	for (int i = 0; i < n_all(c); i++) {
		const vd_config_option *o = opt_at(c, i);
		char line[256];
		int k;

		if (i == N_OPTIONS)
			fprintf(f, "\n%s:\n", c->ext_title ? c->ext_title : "More options");
		if (o->type == VD_CONFIG_BOOL)
			fprintf(f, "  %s, --no-%s\n", o->flag, o->flag + 2);
		else
			fprintf(f, "  %s%s\n", o->flag, metavar(o));
		k = snprintf(line, sizeof(line), "YAML: %s (%s)", o->key, type_name(o));
		if (o->alias != NULL)
			k += snprintf(line + k, sizeof(line) - (size_t)k, ", also %s", o->alias);
		k += snprintf(line + k, sizeof(line) - (size_t)k, "; default: %s",
			      o->def ? o->def : "unset");
		if (o->env != NULL)
			snprintf(line + k, sizeof(line) - (size_t)k, ", or $%s", o->env);
		print_wrapped(f, line, 6);
		if (o->choices != NULL) {
			k = snprintf(line, sizeof(line), "Choices:");
			for (const vd_config_choice *ch = o->choices; ch->name != NULL; ch++)
				k += snprintf(line + k, sizeof(line) - (size_t)k, " %s", ch->name);
			print_wrapped(f, line, 6);
		}
		print_wrapped(f, o->help, 6);
	}
}

void vd_config_print_notices(const vd_config *c, FILE *f)
{
	if (c->trust_remote_code)
		fputs("vllmd: note: trust_remote_code is accepted for vLLM compatibility and "
		      "ignored; vllmd never runs code shipped with a checkpoint\n", f);
}

void vd_config_to_engine_args(const vd_config *c, vd_engine_args *a)
{
	static const char *const devices[] = { "auto", "cpu", "cuda" };
	static const char *const dtypes[] = { "auto", "float32", "bfloat16", "float16" };

	vd_engine_args_init(a);
	a->model = c->model;
	a->tokenizer = c->tokenizer;
	a->plugin_dir = c->plugin_dir;
	a->device = devices[c->device];
	a->dtype = dtypes[c->dtype];
	a->max_model_len = (int)c->max_model_len;
	if (c->limit_mm_per_prompt.image >= 0)
		a->limit_images = (int)c->limit_mm_per_prompt.image;
	a->max_num_seqs = (int)c->max_num_seqs;
	a->max_num_batched_tokens = (int)c->max_num_batched_tokens;
	a->block_size = (int)c->block_size;
	a->kv_cache_memory = c->kv_cache_memory;
	a->gpu_memory_utilization = c->gpu_memory_utilization;
	a->enable_prefix_caching = c->enable_prefix_caching;
	a->enforce_eager = c->enforce_eager;
	a->kv_cache_dtype = c->kv_cache_dtype == VD_CFG_KV_FP8 ? "fp8" : "auto";
	a->num_threads = (int)c->num_threads;
	a->input_workers = (int)c->input_workers;
	a->max_image_pixels = c->max_image_pixels;
	a->seed = (uint64_t)c->seed;
}
