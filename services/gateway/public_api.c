/* What the gateway shows through reflection: its descriptor set without the
 * internal methods (Authenticate, ApplyUsage, ...), which it never routes
 * and which are nobody's business outside the cluster. Each file that has
 * internal methods is unpacked, loses them and is packed again; protobuf-c
 * keeps the options it does not know (our auth rule), so everything else
 * stays byte for byte what protoc wrote. */
#include "gateway.h"

#include "google/protobuf/descriptor.pb-c.h"
#include "onceiot/mem.h"

#include <stdio.h>
#include <string.h>

/* True when /<package>.<service>/<method> is an internal route. */
static bool public__internal(const gw_routes_t *routes, const char *package, const char *service,
                             const char *method)
{
    char path[512];
    int n = snprintf(path, sizeof(path), "/%s%s%s/%s", package ? package : "",
                     package && *package ? "." : "", service, method);
    if (n < 0 || (size_t)n >= sizeof(path))
        return false;
    for (size_t i = 0; i < gw_routes_count(routes); i++) {
        const gw_route_t *r = gw_routes_at(routes, i);
        if (r->rule.internal && strcmp(r->path, path) == 0)
            return true;
    }
    return false;
}

/* Moves the internal methods of every service of f behind the public ones
 * and lowers n_method to hide them; the original counts are saved in orig
 * (one per service) so that free_unpacked later frees every method. */
static void public__strip(Google__Protobuf__FileDescriptorProto *f, const gw_routes_t *routes,
                          size_t *orig)
{
    for (size_t s = 0; s < f->n_service; s++) {
        Google__Protobuf__ServiceDescriptorProto *svc = f->service[s];
        orig[s] = svc->n_method;
        size_t kept = 0;
        for (size_t m = 0; m < svc->n_method; m++) {
            if (public__internal(routes, f->package, svc->name, svc->method[m]->name))
                continue;
            Google__Protobuf__MethodDescriptorProto *keep = svc->method[m];
            svc->method[m] = svc->method[kept];
            svc->method[kept++] = keep;
        }
        svc->n_method = kept;
    }
}

int gw_public_descset(const descset_t *full, const gw_routes_t *routes, uint8_t **bytes,
                      size_t *len, descset_t **out)
{
    size_t n = descset_file_count(full);
    Google__Protobuf__FileDescriptorProto **files = mem_calloc(n ? n : 1, sizeof(*files));
    size_t **orig = mem_calloc(n ? n : 1, sizeof(*orig));
    Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
    set.file = files;
    set.n_file = n;
    int rc = 0;
    *bytes = NULL;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const descset_file_t *df = descset_file(full, i);
        files[i] = google__protobuf__file_descriptor_proto__unpack(NULL, df->len, df->bytes);
        if (!files[i]) {
            rc = ERR_INVALID_ARGUMENT;
            break;
        }
        orig[i] = mem_calloc(files[i]->n_service + 1, sizeof(size_t));
        public__strip(files[i], routes, orig[i]);
    }
    if (rc == 0) {
        *len = google__protobuf__file_descriptor_set__get_packed_size(&set);
        *bytes = mem_alloc(*len ? *len : 1);
        google__protobuf__file_descriptor_set__pack(&set, *bytes);
        if ((rc = descset_load(*bytes, *len, out)) < 0) {
            mem_free(*bytes);
            *bytes = NULL;
        }
    }
    for (size_t i = 0; i < n && files[i]; i++) {
        for (size_t s = 0; s < files[i]->n_service; s++)
            files[i]->service[s]->n_method = orig[i][s];
        google__protobuf__file_descriptor_proto__free_unpacked(files[i], NULL);
        mem_free(orig[i]);
    }
    mem_free(orig);
    mem_free(files);
    return rc;
}
