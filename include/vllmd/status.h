/* vllmd status codes and error messages.
 * Every fallible function returns a vd_status; on failure it also leaves a
 * human-readable message (what was wrong and what to do) in a thread-local
 * buffer read with vd_error_message(). Success never clears the message. */
#ifndef VLLMD_STATUS_H
#define VLLMD_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vd_status {
	VD_OK = 0,
	VD_ERR_INVALID_ARG = -1,  /* caller passed something malformed */
	VD_ERR_NOMEM = -2,        /* allocation failed (host or device) */
	VD_ERR_IO = -3,           /* open/read/mmap/dlopen failed */
	VD_ERR_FORMAT = -4,       /* corrupt or truncated file, bad encoding */
	VD_ERR_NOT_FOUND = -5,    /* missing tensor, key, plugin, file */
	VD_ERR_UNSUPPORTED = -6,  /* valid but not supported (dtype, format, op) */
	VD_ERR_ABI = -7,          /* plugin ABI mismatch */
	VD_ERR_LIMIT = -8,        /* exceeds a configured limit */
	VD_ERR_BACKEND = -9,      /* compute backend failure */
	VD_ERR_INTERNAL = -10,    /* invariant broken: a bug in vllmd */
	VD_ERR_TIMEOUT = -11,     /* an operation ran past its deadline */
} vd_status;

/* Static name of a status ("VD_ERR_FORMAT"); never NULL. */
const char *vd_status_str(vd_status s);

/* Set this thread's error message (printf format) and return s, so that
 * callers can write `return vd_errorf(VD_ERR_IO, "open %s: %s", ...)`. */
vd_status vd_errorf(vd_status s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* This thread's last error message; "" if none was set. Borrowed, valid
 * until the next vd_errorf on this thread. */
const char *vd_error_message(void);

#ifdef __cplusplus
}
#endif
#endif
