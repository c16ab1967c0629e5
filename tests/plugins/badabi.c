/* A plugin built for another ABI major: the loader must refuse it. */
#include "vllmd/plugin.h"

static const char *const archs[] = { "BadAbiForTesting", NULL };

static const vd_plugin_desc desc = {
	.struct_size = sizeof(vd_plugin_desc),
	.magic = VD_PLUGIN_MAGIC,
	.abi_major = VD_PLUGIN_ABI_MAJOR + 1,
	.abi_minor = 0,
	.name = "badabi",
	.version = "0",
	.n_families = 0,
	.families = NULL,
};

static const vd_plugin_desc *entry(const vd_host_api *host)
{
	(void)host;
	(void)archs;
	return &desc;
}

VD_PLUGIN_DEFINE(entry)
