/* vllmd: the command-line entry point.
 *   vllmd --config FILE.yaml [flags]        the OpenAI-compatible daemon
 *   vllmd serve [MODEL] [flags]             the same, vLLM style
 *   vllmd generate --model DIR [--input F.jsonl] [--output F.jsonl] [flags]
 *   vllmd --help | --version
 * Options come from two tables handled as one (YAML keys and CLI flags): the
 * engine's in core/config.c and the daemon's in server/options.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "server/generate.h"
#include "server/openai.h"
#include "server/options.h"
#include "vllmd/llm.h"

static void usage(const vd_config *c, FILE *f)
{
	fprintf(f,
		"usage: vllmd --config FILE.yaml [options]        serve the OpenAI API\n"
		"       vllmd serve MODEL_DIR [options]           the same, as `vllm serve`\n"
		"       vllmd generate --model DIR [--config FILE.yaml] [--input FILE.jsonl]\n"
		"                      [--output FILE.jsonl] [options]\n"
		"       vllmd --help | --version\n\n"
		"serve: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,\n"
		"GET /health, GET /version, GET /metrics. SIGTERM drains, then exits.\n\n"
		"generate: offline batch inference. Each input line is one request:\n"
		"  {\"prompt\": \"USER: <image>\\nWhat is this?\\nASSISTANT:\",\n"
		"   \"multi_modal_data\": {\"image\": \"cat.jpg\"},\n"
		"   \"sampling_params\": {\"temperature\": 0, \"max_tokens\": 64}}\n"
		"or {\"prompt_token_ids\": [...]}. One vLLM RequestOutput per output line.\n"
		"Input defaults to stdin, output to stdout.\n\n"
		"Options (CLI flag, YAML key in a --config file):\n");
	vd_config_print_help(c, f);
	fprintf(f,
		"\nEnvironment (every switch vllmd reads is VD_*; VLLM_* names are vLLM's,\n"
		"read as the option defaults listed above):\n"
		"  VD_PLUGIN_DIR       plugin directory when --plugin-dir is not given\n"
		"  VD_PROFILE=1        when the engine stops, print where its thread spent\n"
		"                      its time and what the input stage did\n"
		"  VD_STAGE_THREADS=N  threads copying a vision batch's pixels (default:\n"
		"                      one per core, up to 8)\n"
		"  VD_CPU_*, VD_CUDA_* backend switches for tests and measurements\n"
		"                      (docs/ENGINE.md, docs/CUDA.md)\n");
}

static int cmd_generate(int argc, char **argv)
{
	vd_config c;
	vd_server_opts s;
	vd_engine_args a;
	vd_llm *llm = NULL;
	const char *in_path = NULL, *out_path = NULL;
	FILE *in = stdin, *out = stdout;
	int first_pos = argc, n_failed = 0, rc = 1;
	char **rest;
	int nrest = 0;
	vd_status st;

	/* --input/--output belong to this command, not to the option table */
	rest = calloc((size_t)argc + 1, sizeof(char *));
	if (!rest) {
		fprintf(stderr, "vllmd: out of memory\n");
		return 1;
	}
	rest[nrest++] = argv[0];
	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "--input") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
			if (argv[i][2] == 'i')
				in_path = argv[++i];
			else
				out_path = argv[++i];
		} else if (!strncmp(argv[i], "--input=", 8)) {
			in_path = argv[i] + 8;
		} else if (!strncmp(argv[i], "--output=", 9)) {
			out_path = argv[i] + 9;
		} else {
			rest[nrest++] = argv[i];
		}
	}
	/* the daemon's options are accepted (a --config file may carry them)
	 * and ignored */
	st = vd_server_config_init(&c, &s);
	if (st == VD_OK)
		st = vd_config_parse_args(&c, nrest, rest, &first_pos);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	if (c.help_requested) {
		usage(&c, stdout);
		rc = 0;
		goto out;
	}
	if (first_pos < nrest) {
		fprintf(stderr, "vllmd generate: unexpected argument '%s'\n", rest[first_pos]);
		goto out;
	}
	st = vd_config_finalize(&c);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	vd_config_print_notices(&c, stderr);
	if (in_path && !(in = fopen(in_path, "r"))) {
		fprintf(stderr, "vllmd: cannot open input %s\n", in_path);
		in = stdin;
		goto out;
	}
	if (out_path && !(out = fopen(out_path, "w"))) {
		fprintf(stderr, "vllmd: cannot open output %s\n", out_path);
		out = stdout;
		goto out;
	}
	vd_config_to_engine_args(&c, &a);
	a.show_progress = true;
	st = vd_llm_create(&a, &llm);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	st = vd_generate_jsonl(llm, in, out, &n_failed);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	if (n_failed)
		fprintf(stderr, "vllmd: %d request(s) failed; see their error lines\n", n_failed);
	rc = n_failed ? 2 : 0;
out:
	vd_llm_destroy(llm);
	if (in != stdin)
		fclose(in);
	if (out != stdout && fclose(out) != 0 && rc == 0) {
		fprintf(stderr, "vllmd: error writing %s\n", out_path);
		rc = 1;
	}
	vd_config_free(&c);
	free(rest);
	return rc;
}

/* `vllmd --config FILE`, `vllmd serve [MODEL]`: the daemon. */
static int cmd_serve(int argc, char **argv)
{
	vd_config c;
	vd_server_opts s;
	int first_pos = argc, rc = 1;
	vd_status st;

	st = vd_server_config_init(&c, &s);
	if (st == VD_OK)
		st = vd_config_parse_args(&c, argc, argv, &first_pos);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	if (c.help_requested) {
		usage(&c, stdout);
		rc = 0;
		goto out;
	}
	if (first_pos < argc) {
		/* vllm serve MODEL */
		if (first_pos + 1 < argc) {
			fprintf(stderr, "vllmd serve: unexpected argument '%s'\n", argv[first_pos + 1]);
			goto out;
		}
		st = vd_config_set(&c, "model", argv[first_pos]);
		if (st != VD_OK) {
			fprintf(stderr, "vllmd: %s\n", vd_error_message());
			goto out;
		}
	}
	st = vd_config_finalize(&c);
	if (st == VD_OK)
		st = vd_server_opts_finalize(&s, &c);
	if (st != VD_OK) {
		fprintf(stderr, "vllmd: %s\n", vd_error_message());
		goto out;
	}
	vd_config_print_notices(&c, stderr);
	rc = vd_serve(&c, &s);
out:
	vd_config_free(&c);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
		printf("vllmd %s\n", VD_VERSION);
		return 0;
	}
	if (argc >= 2 && !strcmp(argv[1], "generate"))
		return cmd_generate(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return cmd_serve(argc - 1, argv + 1);
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		vd_config c;
		vd_server_opts s;

		/* defaults read the environment: a malformed value is named
		 * when the options are used, the help is printed anyway */
		vd_server_config_init(&c, &s);
		usage(&c, argc < 2 ? stderr : stdout);
		vd_config_free(&c);
		return argc < 2 ? 1 : 0;
	}
	if (argv[1][0] == '-')
		return cmd_serve(argc, argv);
	fprintf(stderr, "vllmd: unknown command '%s'. Commands: serve, generate (or --config FILE "
		"to serve).\n", argv[1]);
	return 1;
}
