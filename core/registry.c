/* Plugin registry: loads family plugins with dlopen and checks their ABI
 * before trusting any other member of their descriptor. Refusals name the
 * check that failed so a user can tell a stale build from a wrong file. */
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/registry.h"

struct loaded_plugin {
	void *handle;
	const vd_plugin_desc *desc;
	char *path;
};

struct vd_registry {
	char *dir;
	struct loaded_plugin *plugins;
	int n, cap;
	char refusals[4096];
};

static void note_refusal(vd_registry *r, const char *msg)
{
	size_t len = strlen(r->refusals);

	snprintf(r->refusals + len, sizeof(r->refusals) - len, "%s%s", len ? "\n" : "", msg);
}

/* Check a descriptor in the order that makes each read safe: magic and ABI
 * major first (a foreign layout could make struct_size meaningless). */
static vd_status check_desc(const char *path, const vd_plugin_desc *d)
{
	if (!d)
		return vd_errorf(VD_ERR_ABI, "plugin %s refused: entry point returned no descriptor",
				 path);
	if (d->magic != VD_PLUGIN_MAGIC)
		return vd_errorf(VD_ERR_ABI, "plugin %s refused: bad magic 0x%08x (not a vllmd plugin)",
				 path, d->magic);
	if (d->abi_major != VD_PLUGIN_ABI_MAJOR)
		return vd_errorf(VD_ERR_ABI,
				 "plugin %s refused: ABI major %u, this vllmd needs %u "
				 "(rebuild the plugin against this vllmd's include/vllmd/plugin.h)",
				 path, d->abi_major, VD_PLUGIN_ABI_MAJOR);
	if (d->struct_size < sizeof(vd_plugin_desc))
		return vd_errorf(VD_ERR_ABI,
				 "plugin %s refused: descriptor struct_size %u < %zu",
				 path, d->struct_size, sizeof(vd_plugin_desc));
	if (d->n_families < 0 || (d->n_families > 0 && !d->families))
		return vd_errorf(VD_ERR_ABI, "plugin %s refused: bad family list", path);
	for (int i = 0; i < d->n_families; i++) {
		const vd_family *f = d->families[i];

		if (!f || f->struct_size < sizeof(vd_family))
			return vd_errorf(VD_ERR_ABI,
					 "plugin %s refused: family %d struct_size %u < %zu",
					 path, i, f ? f->struct_size : 0, sizeof(vd_family));
		if (!f->name || !f->architectures || !f->create || !f->destroy || !f->expand)
			return vd_errorf(VD_ERR_ABI,
					 "plugin %s refused: family %d lacks name, architectures, "
					 "create, destroy or expand", path, i);
	}
	return VD_OK;
}

vd_status vd_registry_load(vd_registry *r, const char *path)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	vd_plugin_entry_fn entry;
	const vd_plugin_desc *d;
	vd_status st;

	if (!h)
		return vd_errorf(VD_ERR_IO, "plugin %s: dlopen failed: %s", path, dlerror());
	*(void **)&entry = dlsym(h, VD_PLUGIN_ENTRY_SYMBOL);
	if (!entry) {
		dlclose(h);
		return vd_errorf(VD_ERR_ABI, "plugin %s refused: no '%s' symbol (not a vllmd plugin)",
				 path, VD_PLUGIN_ENTRY_SYMBOL);
	}
	d = entry(vd_host_api_get());
	st = check_desc(path, d);
	if (st != VD_OK) {
		dlclose(h);
		return st;
	}
	if (r->n == r->cap) {
		int cap = r->cap ? r->cap * 2 : 8;
		struct loaded_plugin *p = realloc(r->plugins, (size_t)cap * sizeof(*p));

		if (!p) {
			dlclose(h);
			return vd_errorf(VD_ERR_NOMEM, "out of memory loading plugin %s", path);
		}
		r->plugins = p;
		r->cap = cap;
	}
	r->plugins[r->n].handle = h;
	r->plugins[r->n].desc = d;
	r->plugins[r->n].path = strdup(path);
	r->n++;
	return VD_OK;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

vd_status vd_registry_create(const char *dir, vd_registry **out)
{
	vd_registry *r;
	DIR *dp;
	struct dirent *e;
	char **names = NULL;
	int n = 0, cap = 0;
	vd_status st = VD_OK;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return vd_errorf(VD_ERR_NOMEM, "out of memory");
	r->dir = strdup(dir);
	dp = opendir(dir);
	if (!dp) {
		st = vd_errorf(VD_ERR_NOT_FOUND,
			       "plugin directory '%s' cannot be read (set plugin_dir / --plugin-dir)",
			       dir);
		goto fail;
	}
	while ((e = readdir(dp))) {
		size_t len = strlen(e->d_name);

		if (len < 4 || strcmp(e->d_name + len - 3, ".so"))
			continue;
		if (n == cap) {
			char **nn = realloc(names, (size_t)(cap = cap ? 2 * cap : 16) * sizeof(*nn));

			if (!nn) {
				st = vd_errorf(VD_ERR_NOMEM, "out of memory");
				break;
			}
			names = nn;
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(dp);
	if (st == VD_OK) {
		if (n > 1)
			qsort(names, (size_t)n, sizeof(*names), cmp_str);
		for (int i = 0; i < n; i++) {
			char path[4096];

			snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
			if (vd_registry_load(r, path) != VD_OK) {
				note_refusal(r, vd_error_message());
				fprintf(stderr, "vllmd: warning: %s\n", vd_error_message());
			}
		}
	}
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	if (st != VD_OK)
		goto fail;
	*out = r;
	return VD_OK;
fail:
	vd_registry_destroy(r);
	return st;
}

void vd_registry_destroy(vd_registry *r)
{
	if (!r)
		return;
	for (int i = 0; i < r->n; i++) {
		dlclose(r->plugins[i].handle);
		free(r->plugins[i].path);
	}
	free(r->plugins);
	free(r->dir);
	free(r);
}

vd_status vd_registry_find(const vd_registry *r, const vd_json *architectures,
			   const vd_family **out)
{
	char have[1024] = "";
	char want[512] = "";
	int na = vd_json_len(architectures);

	*out = NULL;
	for (int a = 0; a < na; a++) {
		const char *arch = vd_json_string_value(vd_json_at(architectures, a));

		if (!arch)
			continue;
		for (int i = 0; i < r->n; i++) {
			const vd_plugin_desc *d = r->plugins[i].desc;

			for (int f = 0; f < d->n_families; f++)
				for (const char *const *p = d->families[f]->architectures; *p; p++)
					if (!strcmp(*p, arch)) {
						*out = d->families[f];
						return VD_OK;
					}
		}
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s",
			 a ? ", " : "", arch);
	}
	for (int i = 0; i < r->n; i++)
		snprintf(have + strlen(have), sizeof(have) - strlen(have), "%s%s",
			 i ? ", " : "", r->plugins[i].desc->name);
	if (!want[0])
		return vd_errorf(VD_ERR_NOT_FOUND,
				 "config.json has no 'architectures' list: cannot pick a plugin");
	return vd_errorf(VD_ERR_NOT_FOUND, "no plugin serves architecture %s (plugin dir %s has: %s)",
			 want, r->dir, have[0] ? have : "no plugins");
}

uint32_t vd_registry_abi_minor(const vd_registry *r, const vd_family *f)
{
	for (int i = 0; i < r->n; i++)
		for (int k = 0; k < r->plugins[i].desc->n_families; k++)
			if (r->plugins[i].desc->families[k] == f)
				return r->plugins[i].desc->abi_minor;
	return 0;
}

int vd_registry_count(const vd_registry *r)
{
	return r->n;
}

const char *vd_registry_refusals(const vd_registry *r)
{
	return r->refusals;
}
