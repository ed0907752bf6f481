/* The route table: which upstream serves each method and who may call it,
 * read once at start from the embedded descriptor set. The rules are the
 * (onceiot.common.v1.auth) method options (onceiot/authrule.h). */
#include "gateway.h"

#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const gw_product_upstreams[] = {"identity", "sims", "usage", "commerce", "support"};
const size_t gw_n_product_upstreams = sizeof(gw_product_upstreams) / sizeof(*gw_product_upstreams);

typedef struct gw_service {
    const char *name; /* "onceiot.sims.v1.SimService" (the descset's string) */
    size_t upstream;
} gw_service_t;

struct gw_routes {
    gw_route_t *routes; /* sorted by path for bsearch */
    size_t n;
    char **upstreams; /* names, product ones first */
    size_t n_upstreams;
    gw_service_t *services;
    size_t n_services;
};

/* The upstream of a service: "onceiot.<name>.v1.X" -> index of <name>,
 * added to the table if new. Returns -1 for a service outside onceiot.*. */
static long routes__upstream(gw_routes_t *r, const char *service)
{
    if (strncmp(service, "onceiot.", 8) != 0)
        return -1;
    const char *name = service + 8;
    const char *dot = strchr(name, '.');
    if (!dot || dot == name)
        return -1;
    size_t n = (size_t)(dot - name);
    for (size_t i = 0; i < r->n_upstreams; i++)
        if (strlen(r->upstreams[i]) == n && memcmp(r->upstreams[i], name, n) == 0)
            return (long)i;
    r->upstreams = mem_realloc(r->upstreams, (r->n_upstreams + 1) * sizeof(char *));
    r->upstreams[r->n_upstreams] = mem_strndup(name, n);
    return (long)r->n_upstreams++;
}

static int routes__cmp(const void *a, const void *b)
{
    return strcmp(((const gw_route_t *)a)->path, ((const gw_route_t *)b)->path);
}

int gw_routes_build(const descset_t *ds, gw_routes_t **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = 0;
    gw_routes_t *r = mem_calloc(1, sizeof(*r));
    for (size_t i = 0; i < gw_n_product_upstreams; i++) {
        r->upstreams = mem_realloc(r->upstreams, (r->n_upstreams + 1) * sizeof(char *));
        r->upstreams[r->n_upstreams++] = mem_strdup(gw_product_upstreams[i]);
    }
    size_t n_methods = descset_method_count(ds);
    r->routes = mem_calloc(n_methods ? n_methods : 1, sizeof(*r->routes));
    for (size_t i = 0; i < n_methods; i++) {
        const descset_method_t *m = descset_method_at(ds, i);
        long up = routes__upstream(r, m->service);
        if (up < 0)
            continue; /* health, reflection: served by the gateway itself */
        gw_route_t *route = &r->routes[r->n];
        route->path = m->path;
        route->upstream = (size_t)up;
        route->unary = !m->client_streaming && !m->server_streaming;
        int found =
            m->options ? auth_rule_from_options(m->options, m->options_len, &route->rule) : 0;
        if (found <= 0) {
            snprintf(err, errlen,
                     found == 0 ? "%s has no (onceiot.common.v1.auth) rule; every public method "
                                  "must declare one (refusing to start: fail closed)"
                                : "%s: its (onceiot.common.v1.auth) rule does not parse",
                     m->path);
            rc = ERR_CONFIG;
            goto done;
        }
        /* Internal methods are never relayed: no series for them. */
        if (!route->rule.internal) {
            route->served =
                metrics_rpc_new(m->path, m->client_streaming, m->server_streaming, false);
            route->sent = metrics_rpc_new(m->path, m->client_streaming, m->server_streaming, true);
        }
        r->n++;
        if (r->n_services == 0 || strcmp(r->services[r->n_services - 1].name, m->service) != 0) {
            r->services = mem_realloc(r->services, (r->n_services + 1) * sizeof(*r->services));
            r->services[r->n_services++] = (gw_service_t){m->service, (size_t)up};
        }
    }
    qsort(r->routes, r->n, sizeof(*r->routes), routes__cmp);
done:
    if (rc < 0) {
        gw_routes_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void gw_routes_free(gw_routes_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_upstreams; i++)
        mem_free(r->upstreams[i]);
    mem_free(r->upstreams);
    mem_free(r->services);
    mem_free(r->routes);
    mem_free(r);
}

const gw_route_t *gw_routes_find(const gw_routes_t *r, const char *path, size_t len)
{
    /* The path is the client's bytes: a NUL inside it would make a C-string
     * comparison stop early and match a shorter route. */
    if (len == 0 || memchr(path, '\0', len))
        return NULL;
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *p = r->routes[mid].path;
        size_t plen = strlen(p);
        int c = memcmp(p, path, plen < len ? plen : len);
        if (c == 0)
            c = plen < len ? -1 : plen > len;
        if (c == 0)
            return r->routes[mid].rule.internal ? NULL : &r->routes[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t gw_routes_count(const gw_routes_t *r)
{
    return r->n;
}

const gw_route_t *gw_routes_at(const gw_routes_t *r, size_t i)
{
    return &r->routes[i];
}

size_t gw_routes_upstream_count(const gw_routes_t *r)
{
    return r->n_upstreams;
}

const char *gw_routes_upstream_name(const gw_routes_t *r, size_t i)
{
    return r->upstreams[i];
}

size_t gw_routes_service_count(const gw_routes_t *r)
{
    return r->n_services;
}

const char *gw_routes_service_name(const gw_routes_t *r, size_t i, size_t *upstream)
{
    *upstream = r->services[i].upstream;
    return r->services[i].name;
}
