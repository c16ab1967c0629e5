/* The engine's options, and the machinery every vllmd option goes through.
 * One table (vd_config_options) describes each option the engine reads
 * once: its YAML key (vLLM's name), CLI flag, type, default and help, so the
 * YAML loader, the CLI parser and --help can never disagree. The program
 * around the engine joins its own table (the daemon's: server/options.h)
 * with vd_config_init_ext, and the two are handled as one. Precedence:
 * defaults < environment defaults < YAML < CLI flags. Implemented in
 * core/config.c on libyaml, the only module that includes it. */
#ifndef VLLMD_CORE_CONFIG_H
#define VLLMD_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vllmd/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A list of strings owned by the config. */
typedef struct vd_config_strlist {
	char **items;
	int n;
} vd_config_strlist;

/* limit_mm_per_prompt: most items of each modality per prompt; -1 = unset
 * (the model family's default applies). */
typedef struct vd_config_mm_limits {
	int64_t image;
	int64_t video;
	int64_t audio;
} vd_config_mm_limits;

enum { VD_CFG_DTYPE_AUTO, VD_CFG_DTYPE_FLOAT32, VD_CFG_DTYPE_BFLOAT16, VD_CFG_DTYPE_FLOAT16 };
enum { VD_CFG_DEVICE_AUTO, VD_CFG_DEVICE_CPU, VD_CFG_DEVICE_CUDA };
enum { VD_CFG_KV_AUTO, VD_CFG_KV_FP8 };

struct vd_config_option;

/* The engine's options. Strings are owned (NULL = unset); sizes are bytes;
 * choice fields hold the VD_CFG_* constants above. Fill with
 * vd_config_init_defaults (or vd_config_init_ext), release with
 * vd_config_free. */
typedef struct vd_config {
	/* model */
	char *model;                     /* checkpoint directory (required to run) */
	char *tokenizer;                 /* NULL until vd_config_finalize: = model */
	char *plugin_dir;                /* NULL = the installed plugin directory */
	int dtype;                       /* VD_CFG_DTYPE_* */
	int device;                      /* VD_CFG_DEVICE_* */
	int64_t max_model_len;           /* 0 = from the model's config */
	vd_config_mm_limits limit_mm_per_prompt;
	char *generation_config;         /* "auto", "vllm" or a folder */
	bool trust_remote_code;          /* accepted for vLLM compatibility, ignored */
	/* scheduler and memory */
	int64_t max_num_seqs;
	int64_t max_num_batched_tokens;  /* 0 = auto */
	int64_t block_size;
	int kv_cache_dtype;              /* VD_CFG_KV_* */
	double gpu_memory_utilization;   /* (0, 1] */
	int64_t kv_cache_memory;         /* bytes; 0 = from gpu_memory_utilization */
	bool enable_prefix_caching;
	bool enforce_eager;
	int64_t num_threads;             /* CPU backend threads; 0 = all cores */
	int64_t input_workers;           /* input stage threads; 0 = one per core */
	int64_t seed;
	int64_t max_image_pixels;        /* decoded-image cap */

	/* not options: set by the loaders */
	char *config_path;               /* the --config file, or NULL */
	bool help_requested;             /* -h/--help was on the command line */
	/* the joined table (vd_config_init_ext): its options' offsets point
	 * into ext_base, which c does not own (but frees the strings of) */
	const struct vd_config_option *ext_options;
	int n_ext;
	void *ext_base;
	const char *ext_title;           /* its heading in --help */
} vd_config;

typedef enum vd_config_type {
	VD_CONFIG_STRING,
	VD_CONFIG_STRING_LIST,  /* YAML list or scalar; CLI: one or more values */
	VD_CONFIG_INT,
	VD_CONFIG_FLOAT,
	VD_CONFIG_BOOL,         /* CLI: --x / --no-x / --x=true */
	VD_CONFIG_SIZE,         /* bytes: 1048576, 64MiB, 4GiB, 1.5GB, 512k */
	VD_CONFIG_CHOICE,       /* one of choices[] */
	VD_CONFIG_MM_LIMITS,    /* {image: 2}; CLI image=2[,video=1] or JSON */
} vd_config_type;

typedef struct vd_config_choice {
	const char *name;
	int value;
} vd_config_choice;

/* One option. Numeric options with `ranged` must lie in [min, max]
 * ((min, max] when min_open). */
typedef struct vd_config_option {
	const char *key;        /* YAML key, vLLM's name: "max_model_len" */
	const char *flag;       /* CLI flag: "--max-model-len" */
	const char *alias;      /* another accepted key (a vLLM spelling) or NULL */
	vd_config_type type;
	const char *def;        /* default as option text; NULL = unset */
	const char *env;        /* environment variable overriding def, or NULL */
	const char *help;
	size_t offset;          /* of the field in vd_config */
	const vd_config_choice *choices; /* CHOICE: NULL-name terminated */
	bool ranged, min_open;
	double min, max;
} vd_config_option;

/* Numeric range of an option: [lo, hi] (with .min_open, (lo, hi]). */
#define VD_CONFIG_RANGE(lo, hi) .ranged = true, .min = (lo), .max = (hi)
#define VD_CONFIG_UNBOUNDED 9.2e18 /* about INT64_MAX: "no upper bound" */
#define VD_CONFIG_AT_LEAST(lo) VD_CONFIG_RANGE(lo, VD_CONFIG_UNBOUNDED)

/* The engine's option table; *n receives its length. Static, never NULL. */
const vd_config_option *vd_config_options(int *n);

/* Reset c to the defaults, reading environment defaults (e.g.
 * VLLM_API_KEY) now. Errors: a malformed environment value
 * (VD_ERR_INVALID_ARG naming the variable), VD_ERR_NOMEM. On error c is
 * still safe to vd_config_free. c need not be initialized before. */
vd_status vd_config_init_defaults(vd_config *c);

/* The same, with a second table joined to the engine's: ext (n_ext
 * options, static) whose offsets point into ext_base (borrowed; its
 * fields are reset here and freed by vd_config_free), listed in --help
 * under title (static). Keys and flags of both tables must differ. */
vd_status vd_config_init_ext(vd_config *c, const vd_config_option *ext, int n_ext,
			     void *ext_base, const char *title);

/* Append a copy of s to l. */
vd_status vd_config_strlist_push(vd_config_strlist *l, const char *s);

/* Apply the options of a YAML file whose top level is a mapping of
 * option: value (keys with underscores or dashes). null resets an option to
 * its default. Errors (VD_ERR_INVALID_ARG, or VD_ERR_IO/VD_ERR_NOT_FOUND
 * when unreadable) read "<file>:<line>: ..." for unknown keys (with a "did
 * you mean" hint), bad values, duplicate keys and YAML syntax. Options set
 * before the error stay set. c must be initialized. */
vd_status vd_config_load_yaml(vd_config *c, const char *path);

/* Set one option from text, as the CLI does. key_or_flag may be
 * "max_model_len", "max-model-len" or "--max-model-len"; for a boolean,
 * value NULL means true and "no-<flag>" with value NULL means false. A
 * string list becomes the single value given, or the JSON array of strings
 * given. Errors: VD_ERR_INVALID_ARG naming the option. */
vd_status vd_config_set(vd_config *c, const char *key_or_flag, const char *value);

/* True when c's option takes no value on the command line (booleans and
 * their no- forms). Unknown names are false. */
bool vd_config_option_is_flag(const vd_config *c, const char *key_or_flag);

/* Parse the command line argv[1..argc). `--config FILE` is loaded first
 * wherever it appears (a bare name that is no file here is the installed
 * configuration of that name, in $datadir/vllmd), then every flag is
 * applied over it in order:
 * `--flag value`, `--flag=value`, `--bool`, `--no-bool`; a string list
 * flag takes all following words up to the next one starting with '-'.
 * -h/--help sets c->help_requested and returns VD_OK at once without
 * loading anything. Positional arguments (and all words after "--") are
 * moved, in order, to the end of argv: they are argv[*first_positional ..
 * argc), after the option words (and the "--", if given); with
 * first_positional NULL a positional argument is an error.
 * Errors: VD_ERR_INVALID_ARG naming the flag (unknown flag with a "did you
 * mean" hint, missing or bad value), or the YAML loader's errors. */
vd_status vd_config_parse_args(vd_config *c, int argc, char **argv, int *first_positional);

/* Checks after all sources are applied: model is set, tokenizer defaults to
 * model. Errors: VD_ERR_INVALID_ARG. */
vd_status vd_config_finalize(vd_config *c);

struct vd_engine_args;
/* The engine arguments c names (vllmd/llm.h); strings stay owned by c. */
void vd_config_to_engine_args(const vd_config *c, struct vd_engine_args *a);

/* Print every option of c (the engine's, then the joined table's): CLI
 * flag, YAML key, type, default and help. */
void vd_config_print_help(const vd_config *c, FILE *f);

/* Print a line for each accepted-but-ignored option that is set
 * (trust_remote_code); prints nothing otherwise. */
void vd_config_print_notices(const vd_config *c, FILE *f);

/* Free the strings and lists c owns and leave c zeroed; NULL is a no-op. */
void vd_config_free(vd_config *c);

#ifdef __cplusplus
}
#endif
#endif
