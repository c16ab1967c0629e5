/* Check suite for core/io/safetensors.c. The test writes its own safetensors
 * files (8-byte little-endian header length, JSON header, data) into a
 * temporary directory: single file, 3-way sharded, and corrupt variants. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vllmd/weights.h"

static char tmpdir[64];

static void make_tmpdir(void)
{
	strcpy(tmpdir, "/tmp/vd_test_st_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	char p[512];

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(tmpdir);
}

static char *path_in(const char *name)
{
	static char p[512];

	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	return p;
}

/* Write header text (padded with spaces to 8 bytes, as the safetensors
 * library does) and data; hlen_delta is added to the stored length. */
static void write_raw(const char *name, const char *header, const void *data, size_t n,
		      long hlen_delta)
{
	size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
	uint64_t stored = (uint64_t)((long)padded + hlen_delta);
	unsigned char len[8];
	FILE *f = fopen(path_in(name), "wb");

	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)(stored >> (8 * i));
	fwrite(len, 1, 8, f);
	fwrite(header, 1, hl, f);
	for (size_t i = hl; i < padded; i++)
		fputc(' ', f);
	if (n > 0)
		fwrite(data, 1, n, f);
	fclose(f);
}

static void write_text(const char *name, const char *text)
{
	FILE *f = fopen(path_in(name), "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

struct spec {
	const char *name;
	const char *dtype;
	int ndim;
	int64_t shape[6];
	const void *bytes;
	size_t nbytes;
};

/* A well-formed file holding specs in order. */
static void write_st(const char *fname, const struct spec *s, int n)
{
	char header[65536];
	size_t hl = 0, off = 0, total = 0;
	unsigned char *data;

	for (int i = 0; i < n; i++)
		total += (s[i].nbytes + 7) / 8 * 8;
	data = calloc(1, total + 1);
	ck_assert_ptr_nonnull(data);
	hl += (size_t)snprintf(header + hl, sizeof(header) - hl,
			       "{\"__metadata__\":{\"format\":\"pt\"}");
	for (int i = 0; i < n; i++) {
		hl += (size_t)snprintf(header + hl, sizeof(header) - hl,
				       ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", s[i].name, s[i].dtype);
		for (int d = 0; d < s[i].ndim; d++)
			hl += (size_t)snprintf(header + hl, sizeof(header) - hl, "%s%lld",
					       d ? "," : "", (long long)s[i].shape[d]);
		hl += (size_t)snprintf(header + hl, sizeof(header) - hl,
				       "],\"data_offsets\":[%zu,%zu]}", off, off + s[i].nbytes);
		if (s[i].nbytes > 0)
			memcpy(data + off, s[i].bytes, s[i].nbytes);
		/* pad to 8 as the safetensors library's layout keeps elements
		 * aligned; the gap also checks that holes are tolerated */
		off += (s[i].nbytes + 7) / 8 * 8;
		ck_assert_uint_lt(hl, sizeof(header) - 256);
	}
	hl += (size_t)snprintf(header + hl, sizeof(header) - hl, "}");
	write_raw(fname, header, data, total, 0);
	free(data);
}

static void assert_msg_has(const char *a, const char *b)
{
	const char *m = vd_error_message();

	ck_assert_msg(strstr(m, a) != NULL, "message '%s' lacks '%s'", m, a);
	if (b != NULL)
		ck_assert_msg(strstr(m, b) != NULL, "message '%s' lacks '%s'", m, b);
}

/* Open the directory expecting failure st; the message names a and b. */
static void expect_dir_error(vd_status st, const char *a, const char *b)
{
	vd_weights *w = (vd_weights *)1;

	ck_assert_int_eq(vd_weights_open_dir(tmpdir, &w), st);
	ck_assert_ptr_null(w);
	assert_msg_has(a, b);
}

static float F32[6] = { 1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f };
static uint16_t BF16[4], F16[4];
static int32_t I32[3] = { 7, -8, 2147483647 };
static int64_t I64[2] = { -1, 1LL << 40 };
static uint8_t U8[5] = { 0, 1, 2, 254, 255 };
static float SCALAR = 42.0f;
static const float BF16_VALS[4] = { 1.0f, -0.5f, 3.140625f, -1024.0f };
static const float F16_VALS[4] = { 0.5f, -2.0f, 6.103515625e-05f, 1000.0f };

static void fill_halves(void)
{
	for (int i = 0; i < 4; i++) {
		BF16[i] = vd_f32_to_bf16(BF16_VALS[i]);
		F16[i] = vd_f32_to_f16(F16_VALS[i]);
	}
}

START_TEST(test_single_file_round_trip)
{
	float conv[2 * 3 * 2 * 2 * 2];
	struct spec s[] = {
		{ "a.f32", "F32", 2, { 2, 3 }, F32, sizeof(F32) },
		{ "b.bf16", "BF16", 1, { 4 }, BF16, sizeof(BF16) },
		{ "c.f16", "F16", 2, { 2, 2 }, F16, sizeof(F16) },
		{ "d.i32", "I32", 1, { 3 }, I32, sizeof(I32) },
		{ "e.i64", "I64", 1, { 2 }, I64, sizeof(I64) },
		{ "f.u8", "U8", 1, { 5 }, U8, sizeof(U8) },
		{ "g.scalar", "F32", 0, { 0 }, &SCALAR, sizeof(SCALAR) },
		{ "h.empty", "F32", 2, { 0, 4 }, NULL, 0 },
		{ "visual.patch_embed.proj.weight", "F32", 5, { 2, 3, 2, 2, 2 }, conv, sizeof(conv) },
	};
	vd_weights *w;
	vd_tensor t;

	for (int i = 0; i < 48; i++)
		conv[i] = (float)i;
	fill_halves();
	make_tmpdir();
	write_st("model.safetensors", s, 9);
	ck_assert_int_eq(vd_weights_open_dir(tmpdir, &w), VD_OK);
	ck_assert_int_eq(vd_weights_count(w), 9);
	/* file order is data-offset order */
	ck_assert_str_eq(vd_weights_name_at(w, 0), "a.f32");
	ck_assert_str_eq(vd_weights_name_at(w, 5), "f.u8");
	ck_assert_ptr_null(vd_weights_name_at(w, 9));
	ck_assert(vd_weights_has(w, "c.f16"));
	ck_assert(!vd_weights_has(w, "__metadata__"));

	ck_assert_int_eq(vd_weights_get(w, "a.f32", &t), VD_OK);
	ck_assert_int_eq(t.dtype, VD_DTYPE_F32);
	ck_assert_int_eq(t.device, VD_DEVICE_CPU);
	ck_assert_ptr_null(t.alloc);
	ck_assert_int_eq(t.ndim, 2);
	ck_assert_int_eq(t.shape[0], 2);
	ck_assert_int_eq(t.shape[1], 3);
	ck_assert_int_eq(t.stride[0], 3);
	ck_assert_int_eq(t.stride[1], 1);
	ck_assert(vd_tensor_is_contiguous(&t));
	ck_assert_int_eq(memcmp(t.data, F32, sizeof(F32)), 0);
	ck_assert_float_eq(((const float *)t.data)[5], 65504.0f);

	ck_assert_int_eq(vd_weights_get(w, "b.bf16", &t), VD_OK);
	ck_assert_int_eq(t.dtype, VD_DTYPE_BF16);
	for (int i = 0; i < 4; i++)
		ck_assert_float_eq(vd_bf16_to_f32(((const uint16_t *)t.data)[i]), BF16_VALS[i]);
	ck_assert_int_eq(vd_weights_get(w, "c.f16", &t), VD_OK);
	ck_assert_int_eq(t.dtype, VD_DTYPE_F16);
	for (int i = 0; i < 4; i++)
		ck_assert_float_eq(vd_f16_to_f32(((const uint16_t *)t.data)[i]), F16_VALS[i]);
	ck_assert_int_eq(vd_weights_get(w, "d.i32", &t), VD_OK);
	ck_assert_int_eq(t.dtype, VD_DTYPE_I32);
	ck_assert_int_eq(((const int32_t *)t.data)[2], 2147483647);
	ck_assert_int_eq(vd_weights_get(w, "e.i64", &t), VD_OK);
	ck_assert_int_eq(t.dtype, VD_DTYPE_I64);
	ck_assert(((const int64_t *)t.data)[1] == (1LL << 40));
	ck_assert_int_eq(vd_weights_get(w, "f.u8", &t), VD_OK);
	ck_assert_int_eq(t.dtype, VD_DTYPE_U8);
	ck_assert_int_eq(memcmp(t.data, U8, 5), 0);
	ck_assert_int_eq(vd_weights_get(w, "g.scalar", &t), VD_OK);
	ck_assert_int_eq(t.ndim, 0);
	ck_assert_int_eq(vd_tensor_numel(&t), 1);
	ck_assert_float_eq(*(const float *)t.data, 42.0f);
	ck_assert_int_eq(vd_weights_get(w, "h.empty", &t), VD_OK);
	ck_assert_int_eq(vd_tensor_numel(&t), 0);
	/* 5 dims fold into the 4 a vd_tensor holds */
	ck_assert_int_eq(vd_weights_get(w, "visual.patch_embed.proj.weight", &t), VD_OK);
	ck_assert_int_eq(t.ndim, 4);
	ck_assert_int_eq(t.shape[3], 4);
	ck_assert_int_eq(vd_tensor_numel(&t), 48);
	ck_assert_float_eq(((const float *)t.data)[47], 47.0f);

	ck_assert_int_eq(vd_weights_get(w, "lm_head.weight", &t), VD_ERR_NOT_FOUND);
	assert_msg_has("tensor 'lm_head.weight' not found in", tmpdir);
	assert_msg_has("9 tensors", NULL);
	vd_weights_close(w);

	/* the same file opened directly */
	ck_assert_int_eq(vd_weights_open_file(path_in("model.safetensors"), &w), VD_OK);
	ck_assert_int_eq(vd_weights_count(w), 9);
	ck_assert_int_eq(vd_weights_get(w, "nope", &t), VD_ERR_NOT_FOUND);
	assert_msg_has("model.safetensors", "'nope'");
	vd_weights_close(w);
	vd_weights_close(NULL);
	remove_tmpdir();
}
END_TEST

/* Three shards with an index; the index is listed in shard order. */
static void write_sharded(void)
{
	static float x[3][4];
	struct spec s1[] = { { "model.embed.weight", "F32", 2, { 2, 2 }, x[0], 16 },
			     { "model.layers.0.w", "F32", 1, { 4 }, x[0], 16 } };
	struct spec s2[] = { { "model.layers.1.w", "F32", 1, { 4 }, x[1], 16 } };
	struct spec s3[] = { { "lm_head.weight", "BF16", 1, { 4 }, BF16, 8 },
			     { "model.norm.weight", "F32", 1, { 4 }, x[2], 16 } };

	fill_halves();
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 4; j++)
			x[i][j] = (float)(10 * i + j);
	write_st("model-00001-of-00003.safetensors", s1, 2);
	write_st("model-00002-of-00003.safetensors", s2, 1);
	write_st("model-00003-of-00003.safetensors", s3, 2);
}

#define INDEX_OK \
	"{\"metadata\": {\"total_size\": 88}, \"weight_map\": {" \
	"\"lm_head.weight\": \"model-00003-of-00003.safetensors\"," \
	"\"model.embed.weight\": \"model-00001-of-00003.safetensors\"," \
	"\"model.layers.0.w\": \"model-00001-of-00003.safetensors\"," \
	"\"model.layers.1.w\": \"model-00002-of-00003.safetensors\"," \
	"\"model.norm.weight\": \"model-00003-of-00003.safetensors\"}}"

START_TEST(test_sharded)
{
	vd_weights *w;
	vd_tensor t;

	make_tmpdir();
	write_sharded();
	write_text("model.safetensors.index.json", INDEX_OK);
	ck_assert_int_eq(vd_weights_open_dir(tmpdir, &w), VD_OK);
	ck_assert_int_eq(vd_weights_count(w), 5);
	ck_assert_str_eq(vd_weights_name_at(w, 0), "model.embed.weight");
	ck_assert_str_eq(vd_weights_name_at(w, 2), "model.layers.1.w");
	ck_assert_str_eq(vd_weights_name_at(w, 3), "lm_head.weight");
	ck_assert_int_eq(vd_weights_get(w, "model.layers.1.w", &t), VD_OK);
	ck_assert_float_eq(((const float *)t.data)[3], 13.0f);
	ck_assert_int_eq(vd_weights_get(w, "model.norm.weight", &t), VD_OK);
	ck_assert_float_eq(((const float *)t.data)[1], 21.0f);
	ck_assert_int_eq(vd_weights_get(w, "lm_head.weight", &t), VD_OK);
	ck_assert_int_eq(t.dtype, VD_DTYPE_BF16);
	ck_assert_float_eq(vd_bf16_to_f32(((const uint16_t *)t.data)[2]), BF16_VALS[2]);
	ck_assert_int_eq(vd_weights_get(w, "model.embed.weight", &t), VD_OK);
	ck_assert_int_eq(t.shape[0], 2);
	ck_assert_float_eq(((const float *)t.data)[3], 3.0f);
	vd_weights_close(w);
	remove_tmpdir();
}
END_TEST

/* ~700 tensors, as in a real checkpoint: every name found, right data. */
START_TEST(test_many_tensors_lookup)
{
	enum { N = 700 };
	static int32_t vals[N];
	static struct spec s[N];
	static char names[N][48];
	vd_weights *w;
	vd_tensor t;

	for (int i = 0; i < N; i++) {
		vals[i] = i * 3;
		snprintf(names[i], sizeof(names[i]), "model.layers.%d.mlp.w%d", i / 7, i % 7);
		s[i] = (struct spec){ names[i], "I32", 1, { 1 }, &vals[i], 4 };
	}
	make_tmpdir();
	write_st("model.safetensors", s, N);
	ck_assert_int_eq(vd_weights_open_dir(tmpdir, &w), VD_OK);
	ck_assert_int_eq(vd_weights_count(w), N);
	for (int i = N - 1; i >= 0; i--) {
		ck_assert_int_eq(vd_weights_get(w, names[i], &t), VD_OK);
		ck_assert_int_eq(*(const int32_t *)t.data, i * 3);
		ck_assert_str_eq(vd_weights_name_at(w, i), names[i]);
	}
	ck_assert(!vd_weights_has(w, "model.layers.100.mlp.w0"));
	vd_weights_close(w);
	remove_tmpdir();
}
END_TEST

static const char FOUR_F32[16];

START_TEST(test_corrupt_headers)
{
	vd_weights *w;

	make_tmpdir();
	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4],"
		  "\"data_offsets\":[0,16]}}", FOUR_F32, 16, 100);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: header length", "past end of file");

	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors", "not valid JSON");

	write_raw("model.safetensors", "[1, 2]", NULL, 0, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors", "not a JSON object");

	write_text("model.safetensors", "abc");
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors", "too small");

	/* data truncated: header promises 16 bytes, 8 are there */
	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4],"
		  "\"data_offsets\":[0,16]}}", FOUR_F32, 8, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight' data [0, 16) runs "
			 "past end of file", "truncated");

	write_raw("model.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
		  "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
		  "\"data_offsets\":[4,12]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensors 'a' [0, 8) and 'b' [4, 12) overlap",
			 NULL);

	/* overlap hidden behind a short tensor inside a long one */
	write_raw("model.safetensors", "{\"long\":{\"dtype\":\"U8\",\"shape\":[16],"
		  "\"data_offsets\":[0,16]},\"s1\":{\"dtype\":\"U8\",\"shape\":[2],"
		  "\"data_offsets\":[2,4]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors", "'s1'");

	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[3],"
		  "\"data_offsets\":[0,16]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight'", "need 12 bytes");

	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"Q4\",\"shape\":[4],"
		  "\"data_offsets\":[0,16]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight'", "unknown dtype 'Q4'");

	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[-4],"
		  "\"data_offsets\":[0,16]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight'", "shape[0]");

	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[1.5],"
		  "\"data_offsets\":[0,16]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight'", "shape[0]");

	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[0],"
		  "\"data_offsets\":[8,0]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight'", "ends before");

	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4],"
		  "\"data_offsets\":[0]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight'", "data_offsets");

	write_raw("model.safetensors", "{\"x.weight\":{\"shape\":[4],"
		  "\"data_offsets\":[0,16]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight'", "dtype");

	write_raw("model.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4],"
		  "\"data_offsets\":[0,16]},\"x.weight\":{\"dtype\":\"U8\",\"shape\":[0],"
		  "\"data_offsets\":[16,16]}}", FOUR_F32, 16, 0);
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors: tensor 'x.weight'", "twice");

	/* an I64 at byte 4 cannot be viewed as int64_t: refused by name */
	write_raw("model.safetensors", "{\"pad\":{\"dtype\":\"U8\",\"shape\":[4],"
		  "\"data_offsets\":[0,4]},\"ids\":{\"dtype\":\"I64\",\"shape\":[1],"
		  "\"data_offsets\":[4,12]}}", FOUR_F32, 12, 0);
	{
		vd_tensor t;

		ck_assert_int_eq(vd_weights_open_dir(tmpdir, &w), VD_OK);
		ck_assert_int_eq(vd_weights_get(w, "pad", &t), VD_OK);
		ck_assert_int_eq(vd_weights_get(w, "ids", &t), VD_ERR_UNSUPPORTED);
		assert_msg_has("model.safetensors: tensor 'ids'", "aligned");
		vd_weights_close(w);
	}

	/* a dtype vllmd does not load opens, and is refused by name at get */
	write_raw("model.safetensors", "{\"mask\":{\"dtype\":\"BOOL\",\"shape\":[4],"
		  "\"data_offsets\":[0,4]}}", FOUR_F32, 4, 0);
	{
		vd_tensor t;

		ck_assert_int_eq(vd_weights_open_dir(tmpdir, &w), VD_OK);
		ck_assert(vd_weights_has(w, "mask"));
		ck_assert_int_eq(vd_weights_get(w, "mask", &t), VD_ERR_UNSUPPORTED);
		assert_msg_has("model.safetensors: tensor 'mask'", "BOOL");
		vd_weights_close(w);
	}
	remove_tmpdir();
}
END_TEST

START_TEST(test_sharded_errors)
{
	make_tmpdir();
	write_sharded();
	/* an index naming a shard that is not there */
	write_text("model.safetensors.index.json",
		   "{\"weight_map\": {\"a\": \"model-00001-of-00003.safetensors\","
		   "\"b\": \"model-00004-of-00003.safetensors\"}}");
	expect_dir_error(VD_ERR_NOT_FOUND, "model-00004-of-00003.safetensors",
			 "model.safetensors.index.json");

	/* a tensor the named shard lacks */
	write_text("model.safetensors.index.json",
		   "{\"weight_map\": {\"model.layers.1.w\": \"model-00002-of-00003.safetensors\","
		   "\"model.layers.9.w\": \"model-00002-of-00003.safetensors\"}}");
	expect_dir_error(VD_ERR_FORMAT, "'model.layers.9.w'", "model-00002-of-00003.safetensors");

	/* a tensor in another shard than the index says */
	write_text("model.safetensors.index.json",
		   "{\"weight_map\": {\"model.norm.weight\": \"model-00003-of-00003.safetensors\","
		   "\"lm_head.weight\": \"model-00002-of-00003.safetensors\"}}");
	expect_dir_error(VD_ERR_FORMAT, "'lm_head.weight'", "it is in model-00003-of-00003");

	write_text("model.safetensors.index.json", "{\"metadata\": {}}");
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors.index.json", "weight_map");

	write_text("model.safetensors.index.json", "{\"weight_map\": {\"a\": 3}}");
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors.index.json", "'a'");

	write_text("model.safetensors.index.json", "{\"weight_map\": ");
	expect_dir_error(VD_ERR_FORMAT, "model.safetensors.index.json", "invalid JSON");

	/* the same tensor in two shards */
	{
		static float x[4];
		struct spec dup[] = { { "model.layers.1.w", "F32", 1, { 4 }, x, 16 } };

		write_st("model-00003-of-00003.safetensors", dup, 1);
		write_text("model.safetensors.index.json", INDEX_OK);
		expect_dir_error(VD_ERR_FORMAT, "'model.layers.1.w' is in both",
				 "model-00003-of-00003.safetensors");
	}
	remove_tmpdir();
}
END_TEST

START_TEST(test_missing_weights)
{
	vd_weights *w;

	make_tmpdir();
	expect_dir_error(VD_ERR_NOT_FOUND, "model.safetensors.index.json", "model.safetensors");
	assert_msg_has(tmpdir, NULL);
	write_text("pytorch_model.bin", "x");
	expect_dir_error(VD_ERR_NOT_FOUND, "found: pytorch_model.bin", "converted");
	remove_tmpdir();
	ck_assert_int_eq(vd_weights_open_dir("/nonexistent/vd_model", &w), VD_ERR_NOT_FOUND);
	assert_msg_has("/nonexistent/vd_model", NULL);
	ck_assert_int_eq(vd_weights_open_file("/nonexistent/x.safetensors", &w), VD_ERR_NOT_FOUND);
	assert_msg_has("/nonexistent/x.safetensors", NULL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_single_file_round_trip);
	tcase_add_test(tc, test_sharded);
	tcase_add_test(tc, test_many_tensors_lookup);
	tcase_add_test(tc, test_corrupt_headers);
	tcase_add_test(tc, test_sharded_errors);
	tcase_add_test(tc, test_missing_weights);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
