/* The embedded descriptor set: every binary carries a FileDescriptorSet
 * (protoc --include_imports) of the protos it serves, built by CMake's
 * onceiot_embed_descset. This module indexes it for three users: the server
 * (streaming kind of each method), reflection (files and symbols), and the
 * gateway (method options). The index is immutable once loaded and may be read
 * from any thread. */
#ifndef ONCEIOT_DESCSET_H
#define ONCEIOT_DESCSET_H

#include "onceiot/err.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Linked in by onceiot_embed_descset. */
extern const uint8_t descset_embedded[];
extern const uint8_t descset_embedded_end[];

typedef struct descset descset_t;

typedef struct descset_file {
    const char *name;     /* "sims/v1/sims.proto" */
    const uint8_t *bytes; /* the serialized FileDescriptorProto, exactly as protoc wrote it */
    size_t len;
    const size_t *deps; /* indexes of the files it imports */
    size_t n_deps;
} descset_file_t;

typedef struct descset_method {
    const char *path;       /* "/onceiot.sims.v1.SimService/GetSim" */
    const char *service;    /* "onceiot.sims.v1.SimService" */
    const char *input_type; /* "onceiot.sims.v1.GetSimRequest" (no leading dot) */
    const char *output_type;
    bool client_streaming;
    bool server_streaming;
    const uint8_t *options; /* serialized MethodOptions (custom options included), or NULL */
    size_t options_len;
} descset_method_t;

/* Parses a serialized FileDescriptorSet. The bytes must outlive the index
 * (the embedded set does). Returns 0 or ERR_INVALID_ARGUMENT. */
int descset_load(const uint8_t *data, size_t len, descset_t **out) ONCEIOT_MUSTCHECK;
/* The set linked into this binary. */
int descset_load_embedded(descset_t **out) ONCEIOT_MUSTCHECK;
void descset_free(descset_t *ds);

size_t descset_file_count(const descset_t *ds);
const descset_file_t *descset_file(const descset_t *ds, size_t index);
/* Index of the file with this name, or -1. */
long descset_find_file(const descset_t *ds, const char *name);
/* Index of the file defining a fully-qualified symbol: a package-qualified
 * message (nested too), enum, service, method ("pkg.Svc.Method") or field; or -1. */
long descset_find_symbol(const descset_t *ds, const char *symbol);

/* Fully-qualified names of every service in the set, in file order. */
size_t descset_service_count(const descset_t *ds);
const char *descset_service_name(const descset_t *ds, size_t index);

size_t descset_method_count(const descset_t *ds);
const descset_method_t *descset_method_at(const descset_t *ds, size_t index);
/* The method with path "/pkg.Service/Method", or NULL. */
const descset_method_t *descset_find_method(const descset_t *ds, const char *path);

#endif
