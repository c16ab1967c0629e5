/* A shared object without the plugin entry point: the loader must refuse it. */
int vd_not_a_plugin(void);

int vd_not_a_plugin(void)
{
	return 42;
}
