/* The descriptor-set index.
 *
 * The FileDescriptorSet is walked at the wire level so that each file keeps
 * the exact bytes protoc wrote (reflection serves those bytes, and re-encoding
 * could reorder or drop what protobuf-c does not model). Each file is then
 * parsed with protobuf-c's descriptor.proto code only to learn its names.
 *
 * Everything the index hands out lives in one arena (strings, method options)
 * or in arrays built during the load; nothing changes after descset_load
 * returns, so readers need no locks. */
#include "onceiot/descset.h"

#include "google/protobuf/descriptor.pb-c.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <stdlib.h>
#include <string.h>

/* A name and what it maps to: a file index for symbols and file names, a
 * method index for method paths. Arrays of these are sorted by name. */
typedef struct descset_entry {
    const char *name;
    size_t index;
} descset_entry_t;

struct descset {
    arena_t *arena;        /* strings and method options */
    descset_file_t *files; /* in the order of the set */
    size_t n_files;
    const char **services; /* fully-qualified, in file order */
    size_t n_services;
    descset_method_t *methods; /* in file, service, method order */
    size_t n_methods;
    descset_entry_t *file_names; /* sorted; index = file */
    size_t n_file_names;
    descset_entry_t *symbols; /* sorted; index = file */
    size_t n_symbols;
    descset_entry_t *paths; /* sorted; index = method */
    size_t n_paths;
};

/* What loading needs besides the index itself: the parsed files, which die
 * with the scratch arena once the index is built. */
typedef struct descset_loader {
    descset_t *ds;
    arena_t *scratch;
    Google__Protobuf__FileDescriptorProto **parsed; /* parallel to ds->files */
    size_t cap_files, cap_parsed, cap_services, cap_methods, cap_symbols; /* array capacities */
} descset_loader_t;

/* Makes room for one more element in a heap array of n elements, growing its
 * capacity geometrically. Returns the (possibly moved) array. */
static void *descset__reserve(void *array, size_t n, size_t *cap, size_t elem_size)
{
    if (n < *cap) {
        return array;
    }
    *cap = *cap ? *cap * 2 : 16;
    return mem_realloc(array, *cap * elem_size);
}

static int descset__invalid(const char *why, const char *what)
{
    log_msg(LOG_ERROR, "descset_invalid", "descriptor set rejected: %s%s%s", why,
            what && what[0] ? ": " : "", what && what[0] ? what : "");
    return ERR_INVALID_ARGUMENT;
}

static int descset__varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p == end) {
            return ERR_INVALID_ARGUMENT;
        }
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return ERR_INVALID_ARGUMENT;
}

/* Advances *p past n bytes, failing if fewer remain. */
static int descset__skip(const uint8_t **p, const uint8_t *end, uint64_t n)
{
    if (n > (uint64_t)(end - *p)) {
        return ERR_INVALID_ARGUMENT;
    }
    *p += n;
    return 0;
}

static void descset__add_symbol(descset_loader_t *l, const char *name, size_t file)
{
    descset_t *ds = l->ds;
    ds->symbols =
        descset__reserve(ds->symbols, ds->n_symbols, &l->cap_symbols, sizeof *ds->symbols);
    ds->symbols[ds->n_symbols++] = (descset_entry_t){.name = name, .index = file};
}

/* "pkg.Name" for a scope "pkg", "Name" for the empty scope. The result lives
 * in the index's arena. */
static const char *descset__qualify(descset_t *ds, const char *scope, const char *name)
{
    if (scope[0] == '\0') {
        return arena_strdup(ds->arena, name);
    }
    return arena_printf(ds->arena, "%s.%s", scope, name);
}

static int descset__index_fields(descset_loader_t *l, const char *scope,
                                 Google__Protobuf__FieldDescriptorProto *const *fields, size_t n,
                                 size_t file)
{
    for (size_t i = 0; i < n; i++) {
        if (!fields[i]->name) {
            return descset__invalid("field without a name in", scope);
        }
        descset__add_symbol(l, descset__qualify(l->ds, scope, fields[i]->name), file);
    }
    return 0;
}

static int descset__index_enums(descset_loader_t *l, const char *scope,
                                Google__Protobuf__EnumDescriptorProto *const *enums, size_t n,
                                size_t file)
{
    for (size_t i = 0; i < n; i++) {
        if (!enums[i]->name) {
            return descset__invalid("enum without a name in", scope);
        }
        descset__add_symbol(l, descset__qualify(l->ds, scope, enums[i]->name), file);
    }
    return 0;
}

/* Indexes a message and, recursively, everything declared inside it. The
 * recursion follows the nesting of declarations in a .proto, which is shallow
 * (the set comes from protoc at build time, not from a client). */
static int descset__index_message(descset_loader_t *l, const char *scope,
                                  const Google__Protobuf__DescriptorProto *msg, size_t file)
{
    if (!msg->name) {
        return descset__invalid("message without a name in", scope);
    }
    const char *full = descset__qualify(l->ds, scope, msg->name);
    descset__add_symbol(l, full, file);
    int rc = descset__index_fields(l, full, msg->field, msg->n_field, file);
    if (rc == 0) {
        rc = descset__index_fields(l, full, msg->extension, msg->n_extension, file);
    }
    if (rc == 0) {
        rc = descset__index_enums(l, full, msg->enum_type, msg->n_enum_type, file);
    }
    for (size_t i = 0; rc == 0 && i < msg->n_nested_type; i++) {
        rc = descset__index_message(l, full, msg->nested_type[i], file);
    }
    return rc;
}

/* protoc writes type names fully qualified with a leading dot. */
static const char *descset__type_name(descset_t *ds, const char *name)
{
    return arena_strdup(ds->arena, name[0] == '.' ? name + 1 : name);
}

/* Serializes a method's options again. protobuf-c keeps fields it does not
 * know as unknown fields and packs them back, so custom options (extensions
 * of MethodOptions) survive. Empty options count as none. */
static void descset__pack_options(descset_t *ds, descset_method_t *m,
                                  const Google__Protobuf__MethodOptions *opts)
{
    if (!opts) {
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(&opts->base);
    if (len == 0) {
        return;
    }
    uint8_t *buf = arena_alloc(ds->arena, len);
    protobuf_c_message_pack(&opts->base, buf);
    m->options = buf;
    m->options_len = len;
}

static int descset__index_service(descset_loader_t *l, const char *package,
                                  const Google__Protobuf__ServiceDescriptorProto *svc, size_t file)
{
    descset_t *ds = l->ds;
    if (!svc->name) {
        return descset__invalid("service without a name in", package);
    }
    const char *full = descset__qualify(ds, package, svc->name);
    descset__add_symbol(l, full, file);
    ds->services =
        descset__reserve(ds->services, ds->n_services, &l->cap_services, sizeof *ds->services);
    ds->services[ds->n_services++] = full;

    for (size_t i = 0; i < svc->n_method; i++) {
        const Google__Protobuf__MethodDescriptorProto *md = svc->method[i];
        if (!md->name || !md->input_type || !md->output_type) {
            return descset__invalid("incomplete method in", full);
        }
        descset__add_symbol(l, descset__qualify(ds, full, md->name), file);
        ds->methods =
            descset__reserve(ds->methods, ds->n_methods, &l->cap_methods, sizeof *ds->methods);
        descset_method_t *m = &ds->methods[ds->n_methods++];
        *m = (descset_method_t){
            .path = arena_printf(ds->arena, "/%s/%s", full, md->name),
            .service = full,
            .input_type = descset__type_name(ds, md->input_type),
            .output_type = descset__type_name(ds, md->output_type),
            .client_streaming = md->client_streaming,
            .server_streaming = md->server_streaming,
        };
        descset__pack_options(ds, m, md->options);
    }
    return 0;
}

/* Parses one file's bytes and indexes its name and symbols. */
static int descset__add_file(descset_loader_t *l, const uint8_t *bytes, size_t len)
{
    descset_t *ds = l->ds;
    Google__Protobuf__FileDescriptorProto *fd =
        google__protobuf__file_descriptor_proto__unpack(arena_allocator(l->scratch), len, bytes);
    if (!fd) {
        return descset__invalid("a file does not parse as a FileDescriptorProto", NULL);
    }
    if (!fd->name || fd->name[0] == '\0') {
        return descset__invalid("a file has no name", NULL);
    }
    size_t file = ds->n_files;
    ds->files = descset__reserve(ds->files, ds->n_files, &l->cap_files, sizeof *ds->files);
    l->parsed = descset__reserve(l->parsed, ds->n_files, &l->cap_parsed, sizeof *l->parsed);
    ds->files[file] =
        (descset_file_t){.name = arena_strdup(ds->arena, fd->name), .bytes = bytes, .len = len};
    l->parsed[file] = fd;
    ds->n_files++;

    const char *package = fd->package ? fd->package : "";
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < fd->n_message_type; i++) {
        rc = descset__index_message(l, package, fd->message_type[i], file);
    }
    if (rc == 0) {
        rc = descset__index_enums(l, package, fd->enum_type, fd->n_enum_type, file);
    }
    if (rc == 0) {
        rc = descset__index_fields(l, package, fd->extension, fd->n_extension, file);
    }
    for (size_t i = 0; rc == 0 && i < fd->n_service; i++) {
        rc = descset__index_service(l, package, fd->service[i], file);
    }
    return rc;
}

/* Walks the FileDescriptorSet's fields: each field 1 is one file. Other
 * fields are skipped as the wire format allows; groups are not expected. */
static int descset__walk(descset_loader_t *l, const uint8_t *data, size_t len)
{
    const uint8_t *p = data, *end = data + len;
    while (p < end) {
        uint64_t key = 0, n = 0;
        const uint8_t *bytes = NULL;
        int rc = descset__varint(&p, end, &key);
        uint64_t field = key >> 3;
        if (rc < 0 || field == 0 || (field == 1 && (key & 7) != 2)) {
            return descset__invalid("bad field key", NULL);
        }
        switch (key & 7) {
        case 0:
            rc = descset__varint(&p, end, &n);
            break;
        case 1:
            rc = descset__skip(&p, end, 8);
            break;
        case 2:
            rc = descset__varint(&p, end, &n);
            bytes = p;
            if (rc == 0) {
                rc = descset__skip(&p, end, n);
            }
            break;
        case 5:
            rc = descset__skip(&p, end, 4);
            break;
        default:
            rc = ERR_INVALID_ARGUMENT;
            break;
        }
        if (rc < 0) {
            return descset__invalid("truncated or malformed FileDescriptorSet", NULL);
        }
        if (field == 1) {
            rc = descset__add_file(l, bytes, (size_t)n);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return 0;
}

static int descset__cmp_entry(const void *a, const void *b)
{
    return strcmp(((const descset_entry_t *)a)->name, ((const descset_entry_t *)b)->name);
}

static const descset_entry_t *descset__lookup(const descset_entry_t *v, size_t n, const char *name)
{
    if (!name || n == 0) {
        return NULL;
    }
    descset_entry_t key = {.name = name};
    return bsearch(&key, v, n, sizeof *v, descset__cmp_entry);
}

/* Sorts an entry array and rejects a name defined twice: protoc never writes
 * such a set, and a lookup could not tell the two apart. */
static int descset__sort_unique(descset_entry_t *v, size_t n, const char *what)
{
    if (n == 0) {
        return 0;
    }
    qsort(v, n, sizeof *v, descset__cmp_entry);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(v[i - 1].name, v[i].name) == 0) {
            log_msg(LOG_ERROR, "descset_invalid", "descriptor set rejected: %s %s defined twice",
                    what, v[i].name);
            return ERR_INVALID_ARGUMENT;
        }
    }
    return 0;
}

/* Builds the sorted lookups and resolves each file's imports to indexes.
 * Every import must be in the set (protoc --include_imports puts it there). */
static int descset__link(descset_loader_t *l)
{
    descset_t *ds = l->ds;
    ds->n_file_names = ds->n_files;
    ds->file_names = mem_calloc(ds->n_files, sizeof *ds->file_names);
    for (size_t i = 0; i < ds->n_files; i++) {
        ds->file_names[i] = (descset_entry_t){.name = ds->files[i].name, .index = i};
    }
    ds->n_paths = ds->n_methods;
    ds->paths = mem_calloc(ds->n_methods, sizeof *ds->paths);
    for (size_t i = 0; i < ds->n_methods; i++) {
        ds->paths[i] = (descset_entry_t){.name = ds->methods[i].path, .index = i};
    }
    int rc = descset__sort_unique(ds->file_names, ds->n_file_names, "file");
    if (rc == 0) {
        rc = descset__sort_unique(ds->symbols, ds->n_symbols, "symbol");
    }
    if (rc == 0) {
        rc = descset__sort_unique(ds->paths, ds->n_paths, "method");
    }
    for (size_t i = 0; rc == 0 && i < ds->n_files; i++) {
        const Google__Protobuf__FileDescriptorProto *fd = l->parsed[i];
        size_t *deps = arena_calloc(ds->arena, fd->n_dependency, sizeof *deps);
        for (size_t j = 0; j < fd->n_dependency; j++) {
            const descset_entry_t *e =
                descset__lookup(ds->file_names, ds->n_file_names, fd->dependency[j]);
            if (!e) {
                return descset__invalid("an import is missing from the set", fd->dependency[j]);
            }
            deps[j] = e->index;
        }
        ds->files[i].deps = deps;
        ds->files[i].n_deps = fd->n_dependency;
    }
    return rc;
}

int descset_load(const uint8_t *data, size_t len, descset_t **out)
{
    descset_loader_t l = {.ds = mem_calloc(1, sizeof *l.ds), .scratch = arena_new()};
    l.ds->arena = arena_new();
    *out = NULL;
    int rc = 0;
    if (len > 0) {
        rc = data ? descset__walk(&l, data, len) : ERR_INVALID_ARGUMENT;
    }
    if (rc == 0) {
        rc = descset__link(&l);
    }
    if (rc == 0) {
        *out = l.ds;
        l.ds = NULL;
    }
    descset_free(l.ds);
    mem_free(l.parsed);
    arena_free(l.scratch);
    return rc;
}

void descset_free(descset_t *ds)
{
    if (!ds) {
        return;
    }
    mem_free(ds->files);
    mem_free(ds->services);
    mem_free(ds->methods);
    mem_free(ds->file_names);
    mem_free(ds->symbols);
    mem_free(ds->paths);
    arena_free(ds->arena);
    mem_free(ds);
}

size_t descset_file_count(const descset_t *ds)
{
    return ds->n_files;
}

const descset_file_t *descset_file(const descset_t *ds, size_t index)
{
    return index < ds->n_files ? &ds->files[index] : NULL;
}

long descset_find_file(const descset_t *ds, const char *name)
{
    const descset_entry_t *e = descset__lookup(ds->file_names, ds->n_file_names, name);
    return e ? (long)e->index : -1;
}

long descset_find_symbol(const descset_t *ds, const char *symbol)
{
    const descset_entry_t *e = descset__lookup(ds->symbols, ds->n_symbols, symbol);
    return e ? (long)e->index : -1;
}

size_t descset_service_count(const descset_t *ds)
{
    return ds->n_services;
}

const char *descset_service_name(const descset_t *ds, size_t index)
{
    return index < ds->n_services ? ds->services[index] : NULL;
}

size_t descset_method_count(const descset_t *ds)
{
    return ds->n_methods;
}

const descset_method_t *descset_method_at(const descset_t *ds, size_t index)
{
    return index < ds->n_methods ? &ds->methods[index] : NULL;
}

const descset_method_t *descset_find_method(const descset_t *ds, const char *path)
{
    const descset_entry_t *e = descset__lookup(ds->paths, ds->n_paths, path);
    return e ? &ds->methods[e->index] : NULL;
}
