/* Safetensors checkpoints: each file is mmap'd read-only and its JSON header
 * validated in full at open (dtype, shape, offsets inside the file, byte
 * counts, no overlap), so vd_weights_get never has to distrust a header.
 * Tensors are kept in file order (shard, then data offset) and found by name
 * through an open-addressing hash table. Never writes the mapped files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vllmd/json.h"
#include "vllmd/weights.h"

#define ST_MAX_DIMS 8 /* safetensors has no limit; real checkpoints use <= 5 */
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

/* Every dtype the format defines; `vd` < 0 marks those vllmd does not load,
 * which are still validated so that their bytes count in the overlap check. */
static const struct st_dtype {
	const char *name;
	size_t size;
	int vd;
} st_dtypes[] = {
	{ "F32", 4, VD_DTYPE_F32 },   { "F16", 2, VD_DTYPE_F16 },
	{ "BF16", 2, VD_DTYPE_BF16 }, { "I32", 4, VD_DTYPE_I32 },
	{ "I64", 8, VD_DTYPE_I64 },   { "U8", 1, VD_DTYPE_U8 },
	{ "BOOL", 1, -1 },            { "F64", 8, -1 },
	{ "I8", 1, -1 },              { "I16", 2, -1 },
	{ "U16", 2, -1 },             { "U32", 4, -1 },
	{ "U64", 8, -1 },             { "F8_E4M3", 1, -1 },
	{ "F8_E5M2", 1, -1 },
};
#define N_ST_DTYPES ((int)(sizeof(st_dtypes) / sizeof(st_dtypes[0])))
#define SUPPORTED_LIST "F32, F16, BF16, I32, I64, U8"

struct st_file {
	char *path;           /* as opened; named in every error */
	const uint8_t *map;   /* whole file, PROT_READ */
	size_t size;
	const uint8_t *data;  /* byte buffer after the header */
	size_t data_size;
};

struct st_entry {
	char *name;
	int file;
	int dtype;            /* index into st_dtypes */
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	uint64_t begin, end;  /* byte range inside the file's data buffer */
};

struct vd_weights {
	char *where;          /* directory or file, for "not found" messages */
	struct st_file *files;
	int nfiles;
	struct st_entry *ents;
	int n, cap;
	int *slots;           /* hash table: entry index + 1, 0 = empty */
	size_t mask;
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

/* Slot holding name, or the empty slot where it would go. */
static size_t find_slot(const vd_weights *w, const char *name)
{
	size_t i = (size_t)hash_name(name) & w->mask;

	while (w->slots[i] != 0 && strcmp(w->ents[w->slots[i] - 1].name, name) != 0)
		i = (i + 1) & w->mask;
	return i;
}

static int lookup(const vd_weights *w, const char *name)
{
	size_t i;

	if (w->slots == NULL)
		return -1;
	i = find_slot(w, name);
	return w->slots[i] != 0 ? w->slots[i] - 1 : -1;
}

/* Index every entry by name; a name seen twice is an error naming both files. */
static vd_status build_index(vd_weights *w)
{
	size_t cap = 16;

	while (cap < (size_t)w->n * 2)
		cap *= 2;
	w->slots = calloc(cap, sizeof(*w->slots));
	if (w->slots == NULL)
		return vd_errorf(VD_ERR_NOMEM, "out of memory indexing %d tensors", w->n);
	w->mask = cap - 1;
	for (int k = 0; k < w->n; k++) {
		size_t i = find_slot(w, w->ents[k].name);

		if (w->slots[i] != 0) {
			const struct st_entry *a = &w->ents[w->slots[i] - 1];

			if (a->file == w->ents[k].file)
				return vd_errorf(VD_ERR_FORMAT, "%s: tensor '%s' appears twice in the header",
						 w->files[a->file].path, a->name);
			return vd_errorf(VD_ERR_FORMAT, "tensor '%s' is in both %s and %s",
					 a->name, w->files[a->file].path,
					 w->files[w->ents[k].file].path);
		}
		w->slots[i] = k + 1;
	}
	return VD_OK;
}

static int dtype_index(const char *s)
{
	for (int i = 0; i < N_ST_DTYPES; i++)
		if (strcmp(st_dtypes[i].name, s) == 0)
			return i;
	return -1;
}

/* Non-negative integer JSON number, or -1. */
static int64_t json_count(const vd_json *n)
{
	int64_t v;

	if (!vd_json_is_number(n) || vd_json_int(n, NULL, -1, &v) != VD_OK || v < 0)
		return -1;
	return v;
}

static int cmp_range(const void *pa, const void *pb)
{
	const struct st_entry *a = pa, *b = pb;

	if (a->begin != b->begin)
		return a->begin < b->begin ? -1 : 1;
	if (a->end != b->end)
		return a->end < b->end ? -1 : 1;
	return 0;
}

/* Validate one header entry and fill e (name not set). */
static vd_status parse_entry(const struct st_file *f, const char *name, const vd_json *v,
			     struct st_entry *e)
{
	const vd_json *shape = vd_json_get(v, "shape");
	const vd_json *offs = vd_json_get(v, "data_offsets");
	const char *dt = vd_json_string_value(vd_json_get(v, "dtype"));
	int64_t b, en;
	uint64_t bytes;

	if (!vd_json_is_object(v))
		return vd_errorf(VD_ERR_FORMAT, "%s: tensor '%s': header entry is not an object",
				 f->path, name);
	if (dt == NULL)
		return vd_errorf(VD_ERR_FORMAT, "%s: tensor '%s': missing \"dtype\" string",
				 f->path, name);
	e->dtype = dtype_index(dt);
	if (e->dtype < 0)
		return vd_errorf(VD_ERR_FORMAT,
				 "%s: tensor '%s': unknown dtype '%s' (vllmd loads " SUPPORTED_LIST ")",
				 f->path, name, dt);
	if (!vd_json_is_array(shape))
		return vd_errorf(VD_ERR_FORMAT, "%s: tensor '%s': missing \"shape\" array",
				 f->path, name);
	e->ndim = vd_json_len(shape);
	if (e->ndim > ST_MAX_DIMS)
		return vd_errorf(VD_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d supported)",
				 f->path, name, e->ndim, ST_MAX_DIMS);
	bytes = st_dtypes[e->dtype].size;
	for (int d = 0; d < e->ndim; d++) {
		e->shape[d] = json_count(vd_json_at(shape, d));
		if (e->shape[d] < 0)
			return vd_errorf(VD_ERR_FORMAT,
					 "%s: tensor '%s': shape[%d] is not a non-negative integer",
					 f->path, name, d);
		if (__builtin_mul_overflow(bytes, (uint64_t)e->shape[d], &bytes))
			return vd_errorf(VD_ERR_FORMAT, "%s: tensor '%s': shape overflows 64 bits",
					 f->path, name);
	}
	if (vd_json_len(offs) != 2 || !vd_json_is_array(offs) ||
	    (b = json_count(vd_json_at(offs, 0))) < 0 || (en = json_count(vd_json_at(offs, 1))) < 0)
		return vd_errorf(VD_ERR_FORMAT,
				 "%s: tensor '%s': \"data_offsets\" must be [begin, end] of "
				 "non-negative integers", f->path, name);
	e->begin = (uint64_t)b;
	e->end = (uint64_t)en;
	if (e->begin > e->end)
		return vd_errorf(VD_ERR_FORMAT, "%s: tensor '%s': data [%llu, %llu) ends before it begins",
				 f->path, name, (unsigned long long)e->begin,
				 (unsigned long long)e->end);
	if (e->end > f->data_size)
		return vd_errorf(VD_ERR_FORMAT,
				 "%s: tensor '%s' data [%llu, %llu) runs past end of file "
				 "(%zu data bytes after the header, file size %zu) — file truncated?",
				 f->path, name, (unsigned long long)e->begin,
				 (unsigned long long)e->end, f->data_size, f->size);
	if (e->end - e->begin != bytes)
		return vd_errorf(VD_ERR_FORMAT,
				 "%s: tensor '%s': shape and dtype %s need %llu bytes but data "
				 "[%llu, %llu) holds %llu", f->path, name, dt,
				 (unsigned long long)bytes, (unsigned long long)e->begin,
				 (unsigned long long)e->end,
				 (unsigned long long)(e->end - e->begin));
	return VD_OK;
}

static vd_status grow(vd_weights *w, int more)
{
	struct st_entry *p;
	int cap = w->cap;

	if (w->n + more <= cap)
		return VD_OK;
	while (cap < w->n + more)
		cap = cap ? cap * 2 : 256;
	p = realloc(w->ents, (size_t)cap * sizeof(*p));
	if (p == NULL)
		return vd_errorf(VD_ERR_NOMEM, "out of memory for %d tensor entries", cap);
	w->ents = p;
	w->cap = cap;
	return VD_OK;
}

/* Parse the header of file fi and append its tensors, sorted by offset. */
static vd_status parse_header(vd_weights *w, int fi)
{
	struct st_file *f = &w->files[fi];
	char jerr[512];
	uint64_t hlen = 0;
	vd_json *root = NULL;
	vd_status st;
	int first = w->n, count;

	if (f->size < 8)
		return vd_errorf(VD_ERR_FORMAT,
				 "%s: only %zu bytes, too small for a safetensors header — file truncated?",
				 f->path, f->size);
	for (int i = 7; i >= 0; i--)
		hlen = (hlen << 8) | f->map[i];
	if (hlen > f->size - 8)
		return vd_errorf(VD_ERR_FORMAT,
				 "%s: header length %llu runs past end of file (size %zu) — "
				 "file truncated or not safetensors?",
				 f->path, (unsigned long long)hlen, f->size);
	f->data = f->map + 8 + hlen;
	f->data_size = f->size - 8 - (size_t)hlen;
	st = vd_json_parse((const char *)f->map + 8, (size_t)hlen, &root);
	if (st != VD_OK) {
		snprintf(jerr, sizeof(jerr), "%s", vd_error_message());
		return vd_errorf(VD_ERR_FORMAT, "%s: header is not valid JSON (%s)", f->path, jerr);
	}
	if (!vd_json_is_object(root)) {
		st = vd_errorf(VD_ERR_FORMAT, "%s: header is not a JSON object", f->path);
		goto out;
	}
	count = vd_json_len(root);
	st = grow(w, count);
	if (st != VD_OK)
		goto out;
	for (int i = 0; i < count; i++) {
		const char *name = vd_json_key_at(root, i);
		struct st_entry *e = &w->ents[w->n];

		if (strcmp(name, "__metadata__") == 0)
			continue;
		memset(e, 0, sizeof(*e));
		e->file = fi;
		st = parse_entry(f, name, vd_json_at(root, i), e);
		if (st != VD_OK)
			goto out;
		e->name = strdup(name);
		if (e->name == NULL) {
			st = vd_errorf(VD_ERR_NOMEM, "out of memory for tensor names");
			goto out;
		}
		w->n++;
	}
	qsort(w->ents + first, (size_t)(w->n - first), sizeof(*w->ents), cmp_range);
	/* sorted by begin: a range overlaps an earlier one iff it starts before
	 * the furthest end seen so far; empty tensors own no bytes */
	for (int i = first, far = -1; i < w->n; i++) {
		const struct st_entry *e = &w->ents[i];

		if (e->begin == e->end)
			continue;
		if (far >= 0 && e->begin < w->ents[far].end) {
			st = vd_errorf(VD_ERR_FORMAT,
				       "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
				       f->path, w->ents[far].name,
				       (unsigned long long)w->ents[far].begin,
				       (unsigned long long)w->ents[far].end, e->name,
				       (unsigned long long)e->begin, (unsigned long long)e->end);
			goto out;
		}
		if (far < 0 || e->end > w->ents[far].end)
			far = i;
	}
out:
	vd_json_free(root);
	return st;
}

/* Map path as the next file (files[] has room) and parse its header;
 * listed_in names the index that asked for it, or is NULL. */
static vd_status open_one(vd_weights *w, const char *path, const char *listed_in)
{
	struct st_file *f = &w->files[w->nfiles];
	struct stat sb;
	void *map;
	int fd, err;

	memset(f, 0, sizeof(*f));
	f->path = strdup(path);
	if (f->path == NULL)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	w->nfiles++;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		if (listed_in != NULL)
			return vd_errorf(err == ENOENT ? VD_ERR_NOT_FOUND : VD_ERR_IO,
					 "%s: cannot open: %s (listed in %s)", path,
					 strerror(err), listed_in);
		return vd_errorf(err == ENOENT ? VD_ERR_NOT_FOUND : VD_ERR_IO,
				 "%s: cannot open: %s", path, strerror(err));
	}
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return vd_errorf(VD_ERR_IO, "%s: not a regular file", path);
	}
	f->size = (size_t)sb.st_size;
	if (f->size > 0) {
		map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			err = errno;
			close(fd);
			return vd_errorf(VD_ERR_IO, "%s: mmap of %zu bytes failed: %s", path,
					 f->size, strerror(err));
		}
		f->map = map;
	}
	close(fd);
	return parse_header(w, w->nfiles - 1);
}

static vd_status weights_new(const char *where, int nfiles, vd_weights **out)
{
	vd_weights *w = calloc(1, sizeof(*w));

	*out = NULL;
	if (w == NULL)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	w->where = strdup(where);
	w->files = calloc((size_t)nfiles, sizeof(*w->files));
	if (w->where == NULL || w->files == NULL) {
		vd_weights_close(w);
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	}
	*out = w;
	return VD_OK;
}

void vd_weights_close(vd_weights *w)
{
	if (w == NULL)
		return;
	for (int i = 0; i < w->n; i++)
		free(w->ents[i].name);
	for (int i = 0; i < w->nfiles; i++) {
		if (w->files[i].map != NULL)
			munmap((void *)w->files[i].map, w->files[i].size);
		free(w->files[i].path);
	}
	free(w->ents);
	free(w->files);
	free(w->slots);
	free(w->where);
	free(w);
}

vd_status vd_weights_open_file(const char *path, vd_weights **out)
{
	vd_weights *w;
	vd_status st;

	st = weights_new(path, 1, &w);
	if (st != VD_OK)
		return st;
	st = open_one(w, path, NULL);
	if (st == VD_OK)
		st = build_index(w);
	if (st != VD_OK) {
		vd_weights_close(w);
		return st;
	}
	*out = w;
	return VD_OK;
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);

	if (p != NULL) {
		memcpy(p, dir, a);
		p[a] = '/';
		memcpy(p + a + 1, name, b + 1);
	}
	return p;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Check the index against what the shards hold: every mapped tensor must be
 * in the shard the index names. */
static vd_status check_map(const vd_weights *w, const char *dir, const vd_json *map)
{
	int n = vd_json_len(map);

	for (int i = 0; i < n; i++) {
		const char *name = vd_json_key_at(map, i);
		const char *shard = vd_json_string_value(vd_json_at(map, i));
		int k = lookup(w, name);
		const char *in;

		if (k < 0)
			return vd_errorf(VD_ERR_FORMAT,
					 "%s/" INDEX_NAME " maps tensor '%s' to %s, but %s has no such "
					 "tensor", dir, name, shard, shard);
		in = strrchr(w->files[w->ents[k].file].path, '/') + 1;
		if (strcmp(in, shard) != 0)
			return vd_errorf(VD_ERR_FORMAT,
					 "%s/" INDEX_NAME " maps tensor '%s' to %s, but it is in %s",
					 dir, name, shard, in);
	}
	return VD_OK;
}

/* Open the shards named by the index at ipath. */
static vd_status open_sharded(const char *dir, const char *ipath, vd_weights **out)
{
	vd_json *idx = NULL;
	const vd_json *map;
	const char **shards = NULL;
	vd_weights *w = NULL;
	vd_status st;
	int n, nsh = 0;

	*out = NULL;
	st = vd_json_load_file(ipath, &idx);
	if (st != VD_OK)
		return st;
	map = vd_json_get(idx, "weight_map");
	n = vd_json_len(map);
	if (!vd_json_is_object(map) || n == 0) {
		st = vd_errorf(VD_ERR_FORMAT, "%s: no \"weight_map\" object of tensor -> shard file",
			       ipath);
		goto out;
	}
	shards = malloc((size_t)n * sizeof(*shards));
	if (shards == NULL) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		const char *s = vd_json_string_value(vd_json_at(map, i));

		if (s == NULL || s[0] == '\0' || strchr(s, '/') != NULL) {
			st = vd_errorf(VD_ERR_FORMAT,
				       "%s: weight_map entry for tensor '%s' is not a shard file name",
				       ipath, vd_json_key_at(map, i));
			goto out;
		}
		shards[nsh++] = s;
	}
	/* each shard once, in name order (00001, 00002, ...) */
	qsort(shards, (size_t)nsh, sizeof(*shards), cmp_str);
	n = 0;
	for (int i = 0; i < nsh; i++)
		if (n == 0 || strcmp(shards[n - 1], shards[i]) != 0)
			shards[n++] = shards[i];
	nsh = n;
	st = weights_new(dir, nsh, &w);
	if (st != VD_OK)
		goto out;
	for (int i = 0; i < nsh && st == VD_OK; i++) {
		char *p = join(dir, shards[i]);

		if (p == NULL) {
			st = vd_errorf(VD_ERR_NOMEM, "out of memory");
			break;
		}
		st = open_one(w, p, ipath);
		free(p);
	}
	if (st == VD_OK)
		st = build_index(w);
	if (st == VD_OK)
		st = check_map(w, dir, map);
	if (st == VD_OK) {
		*out = w;
		w = NULL;
	}
out:
	vd_weights_close(w);
	free(shards);
	vd_json_free(idx);
	return st;
}

/* Error for a directory with neither layout, naming what is there instead. */
static vd_status no_weights(const char *dir)
{
	char seen[256] = "";
	size_t used = 0;
	struct dirent *de;
	DIR *d = opendir(dir);
	int err = errno;

	if (d == NULL)
		return vd_errorf(err == ENOENT ? VD_ERR_NOT_FOUND : VD_ERR_IO,
				 "%s: cannot open model directory: %s", dir, strerror(err));
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		int want = (l > 12 && strcmp(de->d_name + l - 12, ".safetensors") == 0) ||
			   (l > 4 && strcmp(de->d_name + l - 4, ".bin") == 0);

		if (want && used + l + 3 < sizeof(seen))
			used += (size_t)snprintf(seen + used, sizeof(seen) - used, "%s%s",
						 used ? ", " : "", de->d_name);
	}
	closedir(d);
	return vd_errorf(VD_ERR_NOT_FOUND,
			 "no weights in %s: looked for " INDEX_NAME " and " SINGLE_NAME "%s%s%s",
			 dir, used ? " (found: " : "", seen,
			 used ? "; vllmd reads only those two hub layouts, and .bin "
				"checkpoints must be converted to safetensors)" : "");
}

vd_status vd_weights_open_dir(const char *dir, vd_weights **out)
{
	char *ipath = join(dir, INDEX_NAME), *spath = join(dir, SINGLE_NAME);
	vd_weights *w = NULL;
	vd_status st;

	*out = NULL;
	if (ipath == NULL || spath == NULL) {
		st = vd_errorf(VD_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (access(ipath, F_OK) == 0) {
		st = open_sharded(dir, ipath, out);
		goto out;
	}
	if (access(spath, F_OK) != 0) {
		st = no_weights(dir);
		goto out;
	}
	st = weights_new(dir, 1, &w);
	if (st == VD_OK)
		st = open_one(w, spath, NULL);
	if (st == VD_OK)
		st = build_index(w);
	if (st == VD_OK) {
		*out = w;
		w = NULL;
	}
out:
	vd_weights_close(w);
	free(ipath);
	free(spath);
	return st;
}

vd_status vd_weights_get(const vd_weights *w, const char *name, vd_tensor *out)
{
	const struct st_entry *e;
	const struct st_file *f;
	const struct st_dtype *dt;
	int64_t shape[VD_MAX_DIMS];
	int ndim, k = lookup(w, name);

	if (k < 0)
		return vd_errorf(VD_ERR_NOT_FOUND,
				 "tensor '%s' not found in %s (%d tensors; did the checkpoint "
				 "layout change?)", name, w->where, w->n);
	e = &w->ents[k];
	f = &w->files[e->file];
	dt = &st_dtypes[e->dtype];
	if (dt->vd < 0)
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "%s: tensor '%s' has dtype %s, which vllmd does not load "
				 "(supported: " SUPPORTED_LIST ")", f->path, name, dt->name);
	/* the header made no alignment promise; a misaligned view would make
	 * every typed read of it undefined behaviour */
	if ((uintptr_t)(f->data + e->begin) % dt->size != 0)
		return vd_errorf(VD_ERR_UNSUPPORTED,
				 "%s: tensor '%s' data is not aligned to its %zu-byte elements; "
				 "re-save the checkpoint with the safetensors library",
				 f->path, name, dt->size);
	/* more dims than a vd_tensor holds: fold the trailing ones into the last */
	ndim = e->ndim < VD_MAX_DIMS ? e->ndim : VD_MAX_DIMS;
	for (int d = 0; d < ndim; d++)
		shape[d] = e->shape[d];
	for (int d = VD_MAX_DIMS; d < e->ndim; d++)
		shape[VD_MAX_DIMS - 1] *= e->shape[d];
	memset(out, 0, sizeof(*out));
	out->dtype = (vd_dtype)dt->vd;
	out->device = VD_DEVICE_CPU;
	vd_tensor_set_shape(out, ndim, shape);
	out->data = (void *)(f->data + e->begin);
	out->alloc = NULL;
	return VD_OK;
}

bool vd_weights_has(const vd_weights *w, const char *name)
{
	return lookup(w, name) >= 0;
}

int vd_weights_count(const vd_weights *w)
{
	return w->n;
}

const char *vd_weights_name_at(const vd_weights *w, int i)
{
	return i >= 0 && i < w->n ? w->ents[i].name : NULL;
}
