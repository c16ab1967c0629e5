/* Plugin registry: dlopen every *.so in a plugin directory, check each
 * plugin's ABI against ours, and find the family that serves a checkpoint's
 * `architectures`. The registry owns the dlopen handles; families it hands
 * out are borrowed and valid until vd_registry_destroy. */
#ifndef VD_REGISTRY_H
#define VD_REGISTRY_H

#include "vllmd/plugin.h"

typedef struct vd_registry vd_registry;

/* Load every plugin in dir (files ending in ".so", in name order). A plugin
 * that fails a check is refused with a warning naming the file and the check
 * (magic, ABI major, struct size, missing entry symbol), and loading goes on;
 * VD_ERR_NOT_FOUND only when dir cannot be read. */
vd_status vd_registry_create(const char *dir, vd_registry **out);
void vd_registry_destroy(vd_registry *r);

/* Load a single plugin file; refusals are returned as VD_ERR_ABI /
 * VD_ERR_NOT_FOUND with the message naming the check that failed. */
vd_status vd_registry_load(vd_registry *r, const char *path);

/* The family serving one of the names in `architectures` (a JSON array of
 * strings from config.json). None: VD_ERR_NOT_FOUND, "no plugin serves
 * architecture X (plugin dir D has: a, b)". */
vd_status vd_registry_find(const vd_registry *r, const vd_json *architectures,
			   const vd_family **out);

/* The plugin ABI minor the plugin serving family f was built with (0 when
 * f is not one of r's). */
uint32_t vd_registry_abi_minor(const vd_registry *r, const vd_family *f);

/* Number of loaded plugins, and the refusal messages collected so far. */
int vd_registry_count(const vd_registry *r);
const char *vd_registry_refusals(const vd_registry *r);

/* The host API table handed to plugins (static, lives forever). */
const vd_host_api *vd_host_api_get(void);

#endif
