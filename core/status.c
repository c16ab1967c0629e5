/* Status names and the thread-local error message behind vd_errorf(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vllmd/status.h"

static _Thread_local char vd_err_buf[1024];

const char *vd_status_str(vd_status s)
{
	switch (s) {
	case VD_OK: return "VD_OK";
	case VD_ERR_INVALID_ARG: return "VD_ERR_INVALID_ARG";
	case VD_ERR_NOMEM: return "VD_ERR_NOMEM";
	case VD_ERR_IO: return "VD_ERR_IO";
	case VD_ERR_FORMAT: return "VD_ERR_FORMAT";
	case VD_ERR_NOT_FOUND: return "VD_ERR_NOT_FOUND";
	case VD_ERR_UNSUPPORTED: return "VD_ERR_UNSUPPORTED";
	case VD_ERR_ABI: return "VD_ERR_ABI";
	case VD_ERR_LIMIT: return "VD_ERR_LIMIT";
	case VD_ERR_BACKEND: return "VD_ERR_BACKEND";
	case VD_ERR_INTERNAL: return "VD_ERR_INTERNAL";
	case VD_ERR_TIMEOUT: return "VD_ERR_TIMEOUT";
	}
	return "VD_ERR_UNKNOWN";
}

/* Formats into a scratch buffer first: callers often wrap the previous
 * message ("image 0: %s", vd_error_message()), which lives in vd_err_buf. */
vd_status vd_errorf(vd_status s, const char *fmt, ...)
{
	char tmp[sizeof(vd_err_buf)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(vd_err_buf, tmp, sizeof(tmp));
	return s;
}

const char *vd_error_message(void)
{
	return vd_err_buf;
}
