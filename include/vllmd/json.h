/* Read-only access to parsed JSON documents (HF config.json,
 * preprocessor_config.json, generation_config.json). Implemented in
 * core/io/json.c on cJSON; no other module sees cJSON types. Nodes are borrowed
 * from their document and live until vd_json_free() of the root. */
#ifndef VLLMD_JSON_H
#define VLLMD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "vllmd/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vd_json vd_json;

/* Parse text (len bytes). Errors say where parsing stopped. */
vd_status vd_json_parse(const char *text, size_t len, vd_json **out);
/* Read and parse a file; errors name the path. */
vd_status vd_json_load_file(const char *path, vd_json **out);
/* Free a root returned by parse/load; NULL is a no-op. */
void vd_json_free(vd_json *root);

/* Node at a dotted path of object keys ("vision_config.hidden_size");
 * NULL when any part is missing or is JSON null. node may be NULL; an empty
 * or NULL path names node itself. Keys that contain dots (tensor names) are
 * reached with vd_json_key_at/vd_json_at instead. */
const vd_json *vd_json_get(const vd_json *node, const char *path);
bool vd_json_is_number(const vd_json *n);
bool vd_json_is_string(const vd_json *n);
bool vd_json_is_bool(const vd_json *n);
bool vd_json_is_array(const vd_json *n);
bool vd_json_is_object(const vd_json *n);

/* Typed reads of the node at path with a default for a missing key or JSON
 * null: this is how the transformers class defaults are applied. A present
 * key of the wrong type is an error (VD_ERR_FORMAT naming the path): ints
 * must be integral numbers (1.0 passes, 1.5 fails), bools true/false only. */
vd_status vd_json_int(const vd_json *node, const char *path, int64_t def, int64_t *out);
vd_status vd_json_num(const vd_json *node, const char *path, double def, double *out);
vd_status vd_json_bool(const vd_json *node, const char *path, bool def, bool *out);
/* Borrowed string, or def when missing. */
vd_status vd_json_str(const vd_json *node, const char *path, const char *def,
		      const char **out);
/* Array length (0 when neither array nor object) and element i (NULL out of range).
 * On an object they count members and give the i-th member's value. Walking
 * i = 0, 1, 2, ... is O(1) per step. */
int vd_json_len(const vd_json *n);
const vd_json *vd_json_at(const vd_json *n, int i);
/* Number of an element/object node (no path); def when not a number. */
double vd_json_number_value(const vd_json *n, double def);
const char *vd_json_string_value(const vd_json *n); /* NULL if not a string */
/* Object iteration: i-th key (NULL past the end). */
const char *vd_json_key_at(const vd_json *obj, int i);

#ifdef __cplusplus
}
#endif
#endif
