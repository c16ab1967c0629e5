/* Check suite for core/config.c with the daemon's table joined to it
 * (server/options.c), as vllmd uses them: defaults, the option tables, YAML
 * loading and its errors (with line numbers), CLI parsing and precedence,
 * sizes, limit_mm_per_prompt forms, environment defaults and --help. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "server/options.h"

static char yaml_path[64];
static vd_server_opts S; /* the daemon's options of the config under test */

/* Write text to a fresh temporary .yaml file named by yaml_path. */
static const char *write_yaml(const char *text)
{
	int fd;
	FILE *f;

	if (yaml_path[0] != '\0')
		unlink(yaml_path);
	strcpy(yaml_path, "/tmp/vd_test_cfg_XXXXXX.yaml");
	fd = mkstemps(yaml_path, 5);
	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	return yaml_path;
}

static void cleanup_yaml(void)
{
	if (yaml_path[0] != '\0')
		unlink(yaml_path);
	yaml_path[0] = '\0';
}

static void init(vd_config *c)
{
	unsetenv("VLLM_IMAGE_FETCH_TIMEOUT");
	unsetenv("VLLM_API_KEY");
	ck_assert_int_eq(vd_server_config_init(c, &S), VD_OK);
}

static void assert_msg_has(const char *a, const char *b)
{
	const char *m = vd_error_message();

	ck_assert_msg(strstr(m, a) != NULL, "message '%s' lacks '%s'", m, a);
	if (b != NULL)
		ck_assert_msg(strstr(m, b) != NULL, "message '%s' lacks '%s'", m, b);
}

/* Load text expecting VD_ERR_INVALID_ARG with "<file>:<line>:" and want. */
static void expect_yaml_error(const char *text, int line, const char *want)
{
	vd_config c;
	char where[128];

	init(&c);
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml(text)), VD_ERR_INVALID_ARG);
	snprintf(where, sizeof(where), "%s:%d: ", yaml_path, line);
	assert_msg_has(where, want);
	vd_config_free(&c);
}

START_TEST(test_defaults)
{
	vd_config c;

	init(&c);
	ck_assert_ptr_null(c.model);
	ck_assert_int_eq(S.served_model_name.n, 0);
	ck_assert_ptr_null(c.tokenizer);
	ck_assert_ptr_null(c.plugin_dir);
	ck_assert_int_eq(c.dtype, VD_CFG_DTYPE_AUTO);
	ck_assert_int_eq(c.device, VD_CFG_DEVICE_AUTO);
	ck_assert_int_eq(c.max_model_len, 0);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, -1);
	ck_assert_int_eq(c.limit_mm_per_prompt.video, -1);
	ck_assert_int_eq(c.limit_mm_per_prompt.audio, -1);
	ck_assert_int_eq(c.max_num_seqs, 256);
	ck_assert_int_eq(c.max_num_batched_tokens, 0);
	ck_assert_int_eq(c.block_size, 16);
	ck_assert_double_eq(c.gpu_memory_utilization, 0.9);
	ck_assert_int_eq(c.kv_cache_memory, 0);
	ck_assert(c.enable_prefix_caching);
	ck_assert(!c.enforce_eager);
	ck_assert_int_eq(c.num_threads, 0);
	ck_assert_int_eq(c.input_workers, 0);
	ck_assert_int_eq(c.seed, 0);
	ck_assert_ptr_null(S.chat_template);
	ck_assert_int_eq(S.chat_template_content_format, VD_CFG_CONTENT_AUTO);
	ck_assert_str_eq(S.host, "0.0.0.0");
	ck_assert_int_eq(S.port, 8000);
	ck_assert_ptr_null(S.api_key);
	ck_assert_double_eq(S.image_fetch_timeout, 5.0);
	ck_assert_ptr_null(S.allowed_local_media_path);
	ck_assert_int_eq(S.allowed_media_domains.n, 0);
	ck_assert_int_eq(S.allowed_media_networks.n, 0);
	ck_assert_int_eq(S.max_request_body_bytes, 64 << 20);
	ck_assert_int_eq(c.max_image_pixels, 89478485);
	ck_assert_int_eq(S.max_image_bytes, 32 << 20);
	ck_assert_int_eq(S.max_redirects, 3);
	ck_assert(!c.trust_remote_code);
	ck_assert_str_eq(c.generation_config, "auto");
	ck_assert(!S.disable_log_requests);
	ck_assert_int_eq(S.log_level, VD_CFG_LOG_INFO);
	ck_assert(!c.help_requested);
	vd_config_free(&c);
	ck_assert_ptr_null(S.host);
	vd_config_free(NULL);
}
END_TEST

/* Each table's flags follow its keys, offsets differ within a table, and
 * no key is in both: what the engine reads is the core's, the daemon's
 * options are the server's. */
static void check_table(const vd_config_option *o, int n)
{
	for (int i = 0; i < n; i++) {
		char want[64];

		snprintf(want, sizeof(want), "--%s", o[i].key);
		for (char *p = want; *p; p++)
			if (*p == '_')
				*p = '-';
		ck_assert_str_eq(o[i].flag, want);
		ck_assert_ptr_nonnull(o[i].help);
		ck_assert_int_gt((int)strlen(o[i].help), 10);
		ck_assert(o[i].type != VD_CONFIG_CHOICE || o[i].choices != NULL);
		for (int j = 0; j < i; j++) {
			ck_assert_str_ne(o[i].key, o[j].key);
			ck_assert(o[i].offset != o[j].offset);
		}
	}
}

START_TEST(test_table_is_consistent)
{
	int n, ns;
	const vd_config_option *o = vd_config_options(&n);
	const vd_config_option *so = vd_server_options(&ns);
	vd_config c;

	ck_assert_int_ge(n, 18);
	ck_assert_int_ge(ns, 16);
	check_table(o, n);
	check_table(so, ns);
	for (int i = 0; i < ns; i++)
		for (int j = 0; j < n; j++)
			ck_assert_str_ne(so[i].key, o[j].key);
	/* the engine's table alone knows no daemon option */
	ck_assert_int_eq(vd_config_init_defaults(&c), VD_OK);
	ck_assert_int_eq(vd_config_set(&c, "port", "8080"), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(vd_config_set(&c, "max-model-len", "8"), VD_OK);
	vd_config_free(&c);
}
END_TEST

static const char *FULL_YAML =
	"# every option\n"
	"model: /models/phi35\n"
	"served_model_name: [phi, phi-3.5-vision]\n"
	"tokenizer: /models/tok\n"
	"plugin-dir: /opt/vllmd/plugins\n"
	"dtype: bfloat16\n"
	"device: cpu\n"
	"max-model-len: 4096\n"
	"limit_mm_per_prompt: {image: 2, video: 0}\n"
	"max_num_seqs: 8\n"
	"max_num_batched_tokens: 8192\n"
	"block_size: 32\n"
	"gpu_memory_utilization: 0.85\n"
	"kv_cache_memory: 4GiB\n"
	"enable_prefix_caching: false\n"
	"enforce_eager: true\n"
	"num_threads: 4\n"
	"input_workers: 3\n"
	"seed: -7\n"
	"chat_template: conf/phi35.jinja\n"
	"chat_template_content_format: openai\n"
	"host: 127.0.0.1\n"
	"port: \"9000\"\n"
	"api_key: secret\n"
	"image_fetch_timeout: 2.5\n"
	"allowed_local_media_path: /data/images\n"
	"allowed_media_domains:\n"
	"  - upload.wikimedia.org\n"
	"  - example.com\n"
	"allowed_media_networks:\n"
	"  - 10.0.0.0/8\n"
	"  - 127.0.0.0/8,::1/128\n"
	"max_request_body_bytes: 1048576\n"
	"max_image_pixels: 1000000\n"
	"max_image_bytes: 8MiB\n"
	"max_redirects: 0\n"
	"trust_remote_code: true\n"
	"generation_config: vllm\n"
	"disable_log_requests: yes\n"
	"uvicorn_log_level: warning\n";

START_TEST(test_full_yaml)
{
	vd_config c;

	init(&c);
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml(FULL_YAML)), VD_OK);
	ck_assert_str_eq(c.model, "/models/phi35");
	ck_assert_int_eq(S.served_model_name.n, 2);
	ck_assert_str_eq(S.served_model_name.items[0], "phi");
	ck_assert_str_eq(S.served_model_name.items[1], "phi-3.5-vision");
	ck_assert_str_eq(c.tokenizer, "/models/tok");
	ck_assert_str_eq(c.plugin_dir, "/opt/vllmd/plugins");
	ck_assert_int_eq(c.dtype, VD_CFG_DTYPE_BFLOAT16);
	ck_assert_int_eq(c.device, VD_CFG_DEVICE_CPU);
	ck_assert_int_eq(c.max_model_len, 4096);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, 2);
	ck_assert_int_eq(c.limit_mm_per_prompt.video, 0);
	ck_assert_int_eq(c.limit_mm_per_prompt.audio, -1);
	ck_assert_int_eq(c.max_num_seqs, 8);
	ck_assert_int_eq(c.max_num_batched_tokens, 8192);
	ck_assert_int_eq(c.block_size, 32);
	ck_assert_double_eq(c.gpu_memory_utilization, 0.85);
	ck_assert(c.kv_cache_memory == 4LL << 30);
	ck_assert(!c.enable_prefix_caching);
	ck_assert(c.enforce_eager);
	ck_assert_int_eq(c.num_threads, 4);
	ck_assert_int_eq(c.input_workers, 3);
	ck_assert_int_eq(c.seed, -7);
	ck_assert_str_eq(S.chat_template, "conf/phi35.jinja");
	ck_assert_int_eq(S.chat_template_content_format, VD_CFG_CONTENT_OPENAI);
	ck_assert_str_eq(S.host, "127.0.0.1");
	ck_assert_int_eq(S.port, 9000);
	ck_assert_str_eq(S.api_key, "secret");
	ck_assert_double_eq(S.image_fetch_timeout, 2.5);
	ck_assert_str_eq(S.allowed_local_media_path, "/data/images");
	ck_assert_int_eq(S.allowed_media_domains.n, 2);
	ck_assert_str_eq(S.allowed_media_domains.items[1], "example.com");
	ck_assert_int_eq(S.allowed_media_networks.n, 2);
	ck_assert_str_eq(S.allowed_media_networks.items[1], "127.0.0.0/8,::1/128");
	ck_assert_int_eq(S.max_request_body_bytes, 1048576);
	ck_assert_int_eq(c.max_image_pixels, 1000000);
	ck_assert_int_eq(S.max_image_bytes, 8 << 20);
	ck_assert_int_eq(S.max_redirects, 0);
	ck_assert(c.trust_remote_code);
	ck_assert_str_eq(c.generation_config, "vllm");
	ck_assert(S.disable_log_requests);
	ck_assert_int_eq(S.log_level, VD_CFG_LOG_WARNING);

	/* a second file overrides; null puts an option back to its default */
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("port: 1234\nhost: ~\n"
							    "served_model_name: solo\n"
							    "max_num_seqs:\n")), VD_OK);
	ck_assert_int_eq(S.port, 1234);
	ck_assert_str_eq(S.host, "0.0.0.0");
	ck_assert_int_eq(c.max_num_seqs, 256);
	ck_assert_int_eq(S.served_model_name.n, 1);
	ck_assert_str_eq(S.served_model_name.items[0], "solo");
	ck_assert_str_eq(c.model, "/models/phi35");
	/* empty and comment-only files set nothing */
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("")), VD_OK);
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("# nothing\n")), VD_OK);
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("---\n")), VD_OK);
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("---\nport: 1234\n...\n")), VD_OK);
	ck_assert_int_eq(S.port, 1234);
	vd_config_free(&c);
	cleanup_yaml();
}
END_TEST

START_TEST(test_yaml_type_errors)
{
	expect_yaml_error("model: m\nport: abc\n", 2, "option 'port': expected an integer, got 'abc'");
	expect_yaml_error("\n\nmax_model_len: 4096.5\n", 3, "expected an integer");
	expect_yaml_error("port: 70000\n", 1, "out of range");
	expect_yaml_error("gpu_memory_utilization: 0\n", 1, "out of range (0, 1]");
	expect_yaml_error("gpu_memory_utilization: 1.5\n", 1, "out of range");
	expect_yaml_error("gpu_memory_utilization: lots\n", 1, "expected a number, got 'lots'");
	expect_yaml_error("a: 1\n", 1, "unknown option 'a'");
	expect_yaml_error("model: m\nenable_prefix_caching: maybe\n", 2,
			  "option 'enable_prefix_caching': expected true or false, got 'maybe'");
	expect_yaml_error("kv_cache_memory: 4 gigs\n", 1, "option 'kv_cache_memory': expected a size");
	expect_yaml_error("max-image-bytes: -1\n", 1, "option 'max-image-bytes'");
	expect_yaml_error("dtype: fp8\n", 1, "one of auto, float32, bfloat16, float16");
	expect_yaml_error("device: tpu\n", 1, "got 'tpu'");
	expect_yaml_error("port: [1, 2]\n", 1, "expected an integer, got a list");
	expect_yaml_error("host: {a: 1}\n", 1, "expected a string, got a mapping");
	expect_yaml_error("allowed_media_domains:\n  - a.com\n  - [b.com]\n", 3, "list of strings");
	expect_yaml_error("limit_mm_per_prompt:\n  image: 2\n  imgae: 1\n", 3,
			  "unknown modality 'imgae'");
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "did you mean 'image'"));
	expect_yaml_error("limit_mm_per_prompt: {image: -2}\n", 1, "non-negative integer");
	expect_yaml_error("max_redirects: 1e3\n", 1, "expected an integer");
	cleanup_yaml();
}
END_TEST

START_TEST(test_yaml_structure_errors)
{
	vd_config c;

	expect_yaml_error("model: m\n\nmax_modle_len: 10\n", 3, "unknown option 'max_modle_len'");
	ck_assert_ptr_nonnull(strstr(vd_error_message(), "did you mean 'max_model_len'?"));
	expect_yaml_error("prot: 1\n", 1, "did you mean 'port'?");
	expect_yaml_error("zzzzzzzz: 1\n", 1, "unknown option 'zzzzzzzz'");
	ck_assert_ptr_null(strstr(vd_error_message(), "did you mean"));
	expect_yaml_error("port: 1\nhost: a\nport: 2\n", 3, "option 'port' given twice (first at line 1)");
	expect_yaml_error("max_model_len: 1\nmax-model-len: 2\n", 2, "given twice");
	expect_yaml_error("- port\n- 8000\n", 1, "top level must be a mapping");
	expect_yaml_error("port: 1\n  host: [\n", 2, "YAML syntax error");
	expect_yaml_error("no-enable-prefix-caching: true\n", 1, "unknown option");
	expect_yaml_error("--port: 1\n", 1, "unknown option '--port'");
	expect_yaml_error("[a]: 1\n", 1, "option names must be plain text");
	expect_yaml_error("port: 1\n---\nport: 2\n", 3, "second YAML document");

	init(&c);
	ck_assert_int_eq(vd_config_load_yaml(&c, "/nonexistent/vd.yaml"), VD_ERR_NOT_FOUND);
	assert_msg_has("/nonexistent/vd.yaml", NULL);
	vd_config_free(&c);
	cleanup_yaml();
}
END_TEST

START_TEST(test_cli_precedence)
{
	vd_config c;
	char path[64];
	char *argv[16];
	int first = -1, argc = 0;

	init(&c);
	strcpy(path, write_yaml("model: /models/a\nport: 9000\nmax_model_len: 1024\n"
				"enable_prefix_caching: true\nhost: 10.0.0.1\n"));
	/* flags before and after --config both win over the file */
	argv[argc++] = "vllmd";
	argv[argc++] = "--port";
	argv[argc++] = "7000";
	argv[argc++] = "/models/positional";
	argv[argc++] = "--config";
	argv[argc++] = path;
	argv[argc++] = "--max-model-len=2048";
	argv[argc++] = "--no-enable-prefix-caching";
	argv[argc++] = "--trust-remote-code";
	argv[argc++] = "--served-model-name";
	argv[argc++] = "x";
	argv[argc++] = "y";
	argv[argc++] = "--seed";
	argv[argc++] = "-3";
	argv[argc++] = "--";
	argv[argc++] = "--literal";
	ck_assert_int_eq(vd_config_parse_args(&c, argc, argv, &first), VD_OK);
	ck_assert_str_eq(c.config_path, path);
	ck_assert_str_eq(c.model, "/models/a");
	ck_assert_str_eq(S.host, "10.0.0.1");
	ck_assert_int_eq(S.port, 7000);
	ck_assert_int_eq(c.max_model_len, 2048);
	ck_assert(!c.enable_prefix_caching);
	ck_assert(c.trust_remote_code);
	ck_assert_int_eq(S.served_model_name.n, 2);
	ck_assert_str_eq(S.served_model_name.items[1], "y");
	ck_assert_int_eq(c.seed, -3);
	/* positionals moved to the end, in order */
	ck_assert_int_eq(first, argc - 2);
	ck_assert_str_eq(argv[first], "/models/positional");
	ck_assert_str_eq(argv[first + 1], "--literal");
	ck_assert_str_eq(argv[1], "--port");
	ck_assert_str_eq(argv[first - 1], "--");
	vd_config_free(&c);

	/* --config=FILE, underscores in flags, --flag=value for a bool */
	init(&c);
	{
		char cfg[96];
		char *av[] = { "vllmd", "--max_num_seqs", "4", cfg, "--enable-prefix-caching=false",
			       "--limit-mm-per-prompt", "image=3", NULL };

		snprintf(cfg, sizeof(cfg), "--config=%s", path);
		ck_assert_int_eq(vd_config_parse_args(&c, 7, av, NULL), VD_OK);
		ck_assert_int_eq(c.max_num_seqs, 4);
		ck_assert_int_eq(S.port, 9000);
		ck_assert(!c.enable_prefix_caching);
		ck_assert_int_eq(c.limit_mm_per_prompt.image, 3);
	}
	vd_config_free(&c);

	/* help stops everything, even a missing config */
	init(&c);
	{
		char *av[] = { "vllmd", "--config", "/nonexistent.yaml", "--help", NULL };

		ck_assert_int_eq(vd_config_parse_args(&c, 4, av, &first), VD_OK);
		ck_assert(c.help_requested);
	}
	vd_config_free(&c);
	cleanup_yaml();
}
END_TEST

/* Parse argv (NULL-terminated) and expect VD_ERR_INVALID_ARG naming want. */
static void expect_cli_error(char **argv, const char *want, const char *want2)
{
	vd_config c;
	int argc = 0, first;

	while (argv[argc] != NULL)
		argc++;
	init(&c);
	ck_assert_int_eq(vd_config_parse_args(&c, argc, argv, &first), VD_ERR_INVALID_ARG);
	assert_msg_has(want, want2);
	vd_config_free(&c);
}

START_TEST(test_cli_errors)
{
	vd_config c;

	expect_cli_error((char *[]){ "vllmd", "--prot", "1", NULL }, "unknown option '--prot'",
			 "did you mean '--port'?");
	expect_cli_error((char *[]){ "vllmd", "--max-model-lne=5", NULL }, "'--max-model-lne'",
			 "did you mean '--max-model-len'?");
	expect_cli_error((char *[]){ "vllmd", "--port", NULL }, "option '--port' needs a value", NULL);
	expect_cli_error((char *[]){ "vllmd", "--port", "eighty", NULL },
			 "option '--port': expected an integer, got 'eighty'", NULL);
	expect_cli_error((char *[]){ "vllmd", "-p", "1", NULL }, "unknown option '-p'", NULL);
	expect_cli_error((char *[]){ "vllmd", "--no-port", NULL }, "unknown option '--no-port'", NULL);
	expect_cli_error((char *[]){ "vllmd", "--no-trust-remote-code=1", NULL }, "takes no value",
			 NULL);
	expect_cli_error((char *[]){ "vllmd", "--served-model-name", "--port", "1", NULL },
			 "needs at least one value", NULL);
	expect_cli_error((char *[]){ "vllmd", "--config", "a.yaml", "--config", "b.yaml", NULL },
			 "given twice", NULL);
	expect_cli_error((char *[]){ "vllmd", "--config", NULL }, "'--config' needs a file", NULL);
	expect_cli_error((char *[]){ "vllmd", "--trust-remote-code=perhaps", NULL },
			 "option '--trust-remote-code': expected true or false", NULL);
	/* a bad value in the YAML is reported with file and line */
	{
		char *av[] = { "vllmd", "--config", NULL, NULL };

		av[2] = (char *)write_yaml("model: m\nblock_size: big\n");
		expect_cli_error(av, yaml_path, ":2: option 'block_size'");
	}
	/* positionals are refused without first_positional */
	init(&c);
	{
		char *av[] = { "vllmd", "extra", NULL };

		ck_assert_int_eq(vd_config_parse_args(&c, 2, av, NULL), VD_ERR_INVALID_ARG);
		assert_msg_has("unexpected argument 'extra'", NULL);
	}
	vd_config_free(&c);
	cleanup_yaml();
}
END_TEST

START_TEST(test_set_and_flags)
{
	vd_config c;

	init(&c);
	ck_assert_int_eq(vd_config_set(&c, "max-model-len", "100"), VD_OK);
	ck_assert_int_eq(c.max_model_len, 100);
	ck_assert_int_eq(vd_config_set(&c, "--max-model-len", "200"), VD_OK);
	ck_assert_int_eq(c.max_model_len, 200);
	ck_assert_int_eq(vd_config_set(&c, "max_model_len", "300"), VD_OK);
	ck_assert_int_eq(c.max_model_len, 300);
	ck_assert_int_eq(vd_config_set(&c, "kv_cache_memory_bytes", "1K"), VD_OK);
	ck_assert_int_eq(c.kv_cache_memory, 1024);
	ck_assert_int_eq(vd_config_set(&c, "--no-enable-prefix-caching", NULL), VD_OK);
	ck_assert(!c.enable_prefix_caching);
	ck_assert_int_eq(vd_config_set(&c, "enable-prefix-caching", NULL), VD_OK);
	ck_assert(c.enable_prefix_caching);
	ck_assert_int_eq(vd_config_set(&c, "dtype", "half"), VD_OK);
	ck_assert_int_eq(c.dtype, VD_CFG_DTYPE_FLOAT16);
	ck_assert_int_eq(vd_config_set(&c, "log-level", "DEBUG"), VD_OK);
	ck_assert_int_eq(S.log_level, VD_CFG_LOG_DEBUG);
	ck_assert_int_eq(vd_config_set(&c, "served_model_name", "[\"a\", \"b\", \"c\"]"), VD_OK);
	ck_assert_int_eq(S.served_model_name.n, 3);
	ck_assert_str_eq(S.served_model_name.items[2], "c");
	ck_assert_int_eq(vd_config_set(&c, "served_model_name", "[\"a\", 1]"), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(S.served_model_name.n, 3); /* unchanged on error */
	ck_assert_int_eq(vd_config_set(&c, "port", NULL), VD_ERR_INVALID_ARG);
	assert_msg_has("'port' needs a value", NULL);
	ck_assert_int_eq(vd_config_set(&c, "port", "12x"), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(S.port, 8000);
	ck_assert_int_eq(vd_config_set(&c, "bogus", "1"), VD_ERR_INVALID_ARG);
	assert_msg_has("unknown option 'bogus'", NULL);

	ck_assert(vd_config_option_is_flag(&c, "--trust-remote-code"));
	ck_assert(vd_config_option_is_flag(&c, "no-enable-prefix-caching"));
	ck_assert(vd_config_option_is_flag(&c, "disable_log_requests"));
	ck_assert(!vd_config_option_is_flag(&c, "--port"));
	ck_assert(!vd_config_option_is_flag(&c, "--nonsense"));
	vd_config_free(&c);
}
END_TEST

START_TEST(test_sizes)
{
	static const struct { const char *in; long long bytes; } ok[] = {
		{ "0", 0 }, { "1048576", 1048576 }, { "64MiB", 64LL << 20 }, { "4GiB", 4LL << 30 },
		{ "512 MiB", 512LL << 20 }, { "1.5GiB", 3LL << 29 }, { "1.5GB", 1500000000LL },
		{ "2k", 2000 }, { "2K", 2048 }, { "25.6k", 25600 }, { "3M", 3LL << 20 },
		{ "3m", 3000000 }, { "1T", 1LL << 40 }, { "7B", 7 }, { "1KiB", 1024 },
	};
	static const char *const bad[] = { "", "GiB", "-1", "4 GiB extra", "4XB", "1.GiB",
					   "99999999999999999999", "16EiB", "20000000T" };
	vd_config c;

	init(&c);
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ck_assert_msg(vd_config_set(&c, "kv-cache-memory", ok[i].in) == VD_OK, "%s: %s",
			      ok[i].in, vd_error_message());
		ck_assert_msg(c.kv_cache_memory == ok[i].bytes, "%s -> %lld", ok[i].in,
			      (long long)c.kv_cache_memory);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(vd_config_set(&c, "kv-cache-memory", bad[i]) == VD_ERR_INVALID_ARG,
			      "'%s' accepted", bad[i]);
		assert_msg_has("kv-cache-memory", "expected a size");
	}
	ck_assert_int_eq(vd_config_set(&c, "max_image_bytes", "0"), VD_ERR_INVALID_ARG);
	assert_msg_has("below the minimum 1", NULL);
	vd_config_free(&c);
}
END_TEST

START_TEST(test_mm_limits)
{
	vd_config c;

	init(&c);
	ck_assert_int_eq(vd_config_set(&c, "--limit-mm-per-prompt", "image=2"), VD_OK);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, 2);
	ck_assert_int_eq(c.limit_mm_per_prompt.video, -1);
	ck_assert_int_eq(vd_config_set(&c, "--limit-mm-per-prompt", "image=4,video=0"), VD_OK);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, 4);
	ck_assert_int_eq(c.limit_mm_per_prompt.video, 0);
	/* a new value replaces the whole mapping */
	ck_assert_int_eq(vd_config_set(&c, "limit_mm_per_prompt", "{\"image\": 5}"), VD_OK);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, 5);
	ck_assert_int_eq(c.limit_mm_per_prompt.video, -1);
	ck_assert_int_eq(vd_config_set(&c, "limit_mm_per_prompt", "{\"audio\": 1, \"image\": 0}"),
			 VD_OK);
	ck_assert_int_eq(c.limit_mm_per_prompt.audio, 1);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, 0);

	ck_assert_int_eq(vd_config_set(&c, "limit_mm_per_prompt", "{\"image\": 1.5}"),
			 VD_ERR_INVALID_ARG);
	assert_msg_has("non-negative integer", NULL);
	ck_assert_int_eq(vd_config_set(&c, "limit_mm_per_prompt", "{\"image\": 2"),
			 VD_ERR_INVALID_ARG);
	assert_msg_has("JSON object", NULL);
	ck_assert_int_eq(vd_config_set(&c, "limit_mm_per_prompt", "image"), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(vd_config_set(&c, "limit_mm_per_prompt", "image=two"), VD_ERR_INVALID_ARG);
	ck_assert_int_eq(vd_config_set(&c, "limit_mm_per_prompt", "imag=1"), VD_ERR_INVALID_ARG);
	assert_msg_has("unknown modality 'imag'", "did you mean 'image'");
	ck_assert_int_eq(vd_config_set(&c, "limit_mm_per_prompt", ""), VD_ERR_INVALID_ARG);
	/* failures left the last good value */
	ck_assert_int_eq(c.limit_mm_per_prompt.audio, 1);

	/* YAML: a mapping, or the CLI text as a string */
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("limit_mm_per_prompt:\n  image: 3\n")),
			 VD_OK);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, 3);
	ck_assert_int_eq(c.limit_mm_per_prompt.audio, -1);
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("limit_mm_per_prompt: "
							    "'{\"image\": 6}'\n")), VD_OK);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, 6);
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("limit-mm-per-prompt: image=7\n")),
			 VD_OK);
	ck_assert_int_eq(c.limit_mm_per_prompt.image, 7);
	vd_config_free(&c);
	cleanup_yaml();
}
END_TEST

START_TEST(test_env_defaults)
{
	vd_config c;

	init(&c);
	ck_assert_double_eq(S.image_fetch_timeout, 5.0);
	vd_config_free(&c);

	setenv("VLLM_IMAGE_FETCH_TIMEOUT", "12.5", 1);
	setenv("VLLM_API_KEY", "k-123", 1);
	ck_assert_int_eq(vd_server_config_init(&c, &S), VD_OK);
	ck_assert_double_eq(S.image_fetch_timeout, 12.5);
	ck_assert_str_eq(S.api_key, "k-123");
	/* YAML and CLI still win over the environment; null goes back to it */
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("image_fetch_timeout: 3\n")), VD_OK);
	ck_assert_double_eq(S.image_fetch_timeout, 3.0);
	ck_assert_int_eq(vd_config_set(&c, "image-fetch-timeout", "1.25"), VD_OK);
	ck_assert_double_eq(S.image_fetch_timeout, 1.25);
	ck_assert_int_eq(vd_config_load_yaml(&c, write_yaml("image_fetch_timeout: null\n")), VD_OK);
	ck_assert_double_eq(S.image_fetch_timeout, 12.5);
	vd_config_free(&c);

	setenv("VLLM_IMAGE_FETCH_TIMEOUT", "soon", 1);
	ck_assert_int_eq(vd_server_config_init(&c, &S), VD_ERR_INVALID_ARG);
	assert_msg_has("VLLM_IMAGE_FETCH_TIMEOUT", "got 'soon'");
	vd_config_free(&c);
	setenv("VLLM_IMAGE_FETCH_TIMEOUT", "0", 1);
	ck_assert_int_eq(vd_server_config_init(&c, &S), VD_ERR_INVALID_ARG);
	assert_msg_has("VLLM_IMAGE_FETCH_TIMEOUT", "out of range");
	vd_config_free(&c);
	unsetenv("VLLM_IMAGE_FETCH_TIMEOUT");
	unsetenv("VLLM_API_KEY");
	cleanup_yaml();
}
END_TEST

START_TEST(test_finalize_and_notices)
{
	vd_config c;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	init(&c);
	ck_assert_int_eq(vd_config_finalize(&c), VD_ERR_INVALID_ARG);
	assert_msg_has("no model", "--model");
	ck_assert_int_eq(vd_config_set(&c, "model", "/m/llava"), VD_OK);
	ck_assert_int_eq(vd_config_finalize(&c), VD_OK);
	ck_assert_int_eq(vd_server_opts_finalize(&S, &c), VD_OK);
	ck_assert_str_eq(c.tokenizer, "/m/llava");
	ck_assert_int_eq(S.served_model_name.n, 1);
	ck_assert_str_eq(S.served_model_name.items[0], "/m/llava");

	f = open_memstream(&buf, &len);
	vd_config_print_notices(&c, f);
	fflush(f);
	ck_assert_uint_eq(len, 0);
	ck_assert_int_eq(vd_config_set(&c, "--trust-remote-code", NULL), VD_OK);
	vd_config_print_notices(&c, f);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(buf, "trust_remote_code"));
	ck_assert_ptr_nonnull(strstr(buf, "ignored"));
	free(buf);
	vd_config_free(&c);
}
END_TEST

START_TEST(test_help_lists_everything)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int n[2];
	const vd_config_option *tab[2] = { vd_config_options(&n[0]), vd_server_options(&n[1]) };
	vd_config c;

	init(&c);
	vd_config_print_help(&c, f);
	fclose(f);
	vd_config_free(&c);
	ck_assert_ptr_nonnull(strstr(buf, "--config FILE"));
	ck_assert_ptr_nonnull(strstr(buf, "Server options"));
	for (int t = 0; t < 2; t++)
		for (int i = 0; i < n[t]; i++) {
			const vd_config_option *o = &tab[t][i];
			char key[80];

			snprintf(key, sizeof(key), "YAML: %s (", o->key);
			ck_assert_msg(strstr(buf, key) != NULL, "help lacks key %s", o->key);
			ck_assert_msg(strstr(buf, o->flag) != NULL, "help lacks flag %s", o->flag);
			if (o->alias != NULL)
				ck_assert_msg(strstr(buf, o->alias) != NULL, "help lacks %s", o->alias);
			if (o->env != NULL)
				ck_assert_msg(strstr(buf, o->env) != NULL, "help lacks %s", o->env);
		}
	ck_assert_ptr_nonnull(strstr(buf, "--no-enable-prefix-caching"));
	ck_assert_ptr_nonnull(strstr(buf, "default: 89478485"));
	ck_assert_ptr_nonnull(strstr(buf, "default: 64MiB"));
	ck_assert_ptr_nonnull(strstr(buf, "Choices: auto float32 bfloat16 float16"));
	/* wrapped: no line longer than 79 columns */
	for (char *line = buf, *nl; *line != '\0'; line = nl + 1) {
		nl = strchr(line, '\n');
		ck_assert_ptr_nonnull(nl);
		ck_assert_int_le((int)(nl - line), 79);
	}
	free(buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_table_is_consistent);
	tcase_add_test(tc, test_full_yaml);
	tcase_add_test(tc, test_yaml_type_errors);
	tcase_add_test(tc, test_yaml_structure_errors);
	tcase_add_test(tc, test_cli_precedence);
	tcase_add_test(tc, test_cli_errors);
	tcase_add_test(tc, test_set_and_flags);
	tcase_add_test(tc, test_sizes);
	tcase_add_test(tc, test_mm_limits);
	tcase_add_test(tc, test_env_defaults);
	tcase_add_test(tc, test_finalize_and_notices);
	tcase_add_test(tc, test_help_lists_everything);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
