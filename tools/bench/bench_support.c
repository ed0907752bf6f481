/* The support benchmark's client (run by tools/bench/support.sh, which
 * starts the processes and loads the tickets). Prints figures and ratios;
 * asserts nothing. Over the loaded tickets (organization 1..ORGS) it measures
 * ListTickets with a full-text search, one call at a time, p50/p99:
 *   - as a customer of one organization (the public search document) and as
 *     staff over every organization (the document with internal notes);
 *   - for a common word, a rare code and two common words together;
 *   - through the gateway, and the very statement ListTickets runs
 *     (support_sql.h) executed directly with libpq: the baseline, measured
 *     call by call in turn with the gateway's, so both see the same load.
 * Then EXPLAIN ANALYZE of one customer and one staff search.
 *
 * usage: onceiot-bench-support GATEWAY_ADDR "Bearer <superuser key>" PG_URL CALLS
 * PG_URL is a superuser URL of the bench database (support schema). */
#include "../../services/support/support_sql.h"
#include "identity/v1/identity.pb-c.h"
#include "onceiot/client.h"
#include "support/v1/support.pb-c.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CUSTOMER_ORG "42"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "error: %s: %s\n", what, why);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double p50, p99, rows; /* ms, ms, rows per answer */
} stats_t;

static stats_t stats_of(double *v, long n, long rows)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return (stats_t){v[n / 2], v[(n * 99) / 100], (double)rows / (double)n};
}

/* One unary call through the gateway as auth; dies on failure. */
static ProtobufCMessage *call(rpc_channel_t *gw, arena_t *a, const char *auth, const char *method,
                              const ProtobufCMessage *req, const ProtobufCMessageDescriptor *d)
{
    rpc_md_t md[] = {{"authorization", auth, 0}};
    rpc_call_opts_t o = {.timeout_ms = 30000, .metadata = md, .n_metadata = 1};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    if (rpc_unary(gw, method, req, d, a, &o, &resp, &st) < 0)
        die(method, st.message);
    return resp;
}

/* A customer of CUSTOMER_ORG with a support:read key; returns its bearer. */
static const char *customer(rpc_channel_t *gw, arena_t *a, const char *root)
{
    Onceiot__Identity__V1__CreateUserRequest u = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    u.username = "bench_customer";
    u.email = "bench_customer@example.com";
    u.password = "bench-password-long";
    u.role = ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY;
    u.organization_id = atol(CUSTOMER_ORG);
    Onceiot__Identity__V1__User *user =
        (void *)call(gw, a, root, "/onceiot.identity.v1.IdentityService/CreateUser", &u.base,
                     &onceiot__identity__v1__user__descriptor);
    Onceiot__Identity__V1__CreateApiKeyRequest k =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    char *scopes[] = {"support:read"};
    k.name = "bench";
    k.scopes = scopes;
    k.n_scopes = 1;
    k.user_id = user->id;
    Onceiot__Identity__V1__CreateApiKeyResponse *key =
        (void *)call(gw, a, root, "/onceiot.identity.v1.IdentityService/CreateApiKey", &k.base,
                     &onceiot__identity__v1__create_api_key_response__descriptor);
    return arena_printf(a, "Bearer %s", key->secret);
}

/* The queries of one kind, used in turn (the words support.sh loads). */
typedef struct kind {
    const char *name;
    const char *queries[4];
} kind_t;

static const kind_t kinds[] = {
    {"common word", {"modem", "roaming", "invoice", "firmware"}},
    {"rare code", {"e1234", "e0042", "e1777", "e0999"}},
    {"two words", {"modem offline", "roaming apn", "invoice late", "firmware update"}},
};

/* One ListTickets through the gateway as auth; returns the rows answered. */
static long list_gateway(rpc_channel_t *gw, const char *auth, const char *query)
{
    arena_t *a = arena_new();
    Onceiot__Support__V1__ListTicketsRequest req = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    req.query = (char *)query;
    Onceiot__Support__V1__ListTicketsResponse *r =
        (void *)call(gw, a, auth, "/onceiot.support.v1.SupportService/ListTickets", &req.base,
                     &onceiot__support__v1__list_tickets_response__descriptor);
    long n = (long)r->n_tickets;
    arena_free(a);
    return n;
}

/* The statement ListTickets runs, on a connection of its own: $1 the
 * customer's organization or NULL, $10 or $11 the query, LIMIT 51. */
static long list_sql(PGconn *c, bool staff, const char *query)
{
    const char *v[16] = {NULL};
    v[0] = staff ? NULL : CUSTOMER_ORG;
    v[staff ? 10 : 9] = query;
    v[13] = "51";
    PGresult *r = PQexecPrepared(c, "list", 16, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("list", PQerrorMessage(c));
    long n = PQntuples(r);
    PQclear(r);
    return n;
}

/* calls of each path, alternating call by call (the machine is shared:
 * both see the same background load). */
static void bench_pair(rpc_channel_t *gw, const char *auth, PGconn *c, bool staff, const kind_t *k,
                       long calls, stats_t *via_gw, stats_t *alone)
{
    double *lg = malloc(sizeof(double) * (size_t)calls),
           *ls = malloc(sizeof(double) * (size_t)calls);
    long rows_g = 0, rows_s = 0;
    for (long i = 0; i < calls; i++) {
        const char *q = k->queries[i % 4];
        double t0 = now_ms();
        rows_g += list_gateway(gw, auth, q);
        double t1 = now_ms();
        rows_s += list_sql(c, staff, q);
        double t2 = now_ms();
        lg[i] = t1 - t0;
        ls[i] = t2 - t1;
    }
    *via_gw = stats_of(lg, calls, rows_g);
    *alone = stats_of(ls, calls, rows_s);
    free(lg);
    free(ls);
}

static void explain(PGconn *c, bool staff, const char *query)
{
    char *q = PQescapeLiteral(c, query, strlen(query));
    char sql[256];
    snprintf(sql, sizeof(sql),
             "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE list(%s, NULL, NULL, NULL, NULL, NULL, NULL, "
             "NULL, NULL, %s, %s, NULL, NULL, 51, NULL, NULL)",
             staff ? "NULL" : CUSTOMER_ORG, staff ? "NULL" : q, staff ? q : "NULL");
    PQfreemem(q);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("EXPLAIN", PQerrorMessage(c));
    printf("\n-- ListTickets, %s search \"%s\"\n", staff ? "staff" : "customer", query);
    for (int i = 0; i < PQntuples(r); i++)
        printf("%s\n", PQgetvalue(r, i, 0));
    PQclear(r);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s GATEWAY_ADDR \"Bearer <key>\" PG_URL CALLS\n", argv[0]);
        return 2;
    }
    long calls = atol(argv[4]);
    if (calls < 10)
        die("CALLS", "at least 10");
    rpc_channel_t *gw = NULL;
    if (rpc_channel_new(argv[1], 16 << 20, &gw) < 0)
        die("gateway", argv[1]);
    arena_t *a = arena_new();
    const char *root = argv[2], *cust = customer(gw, a, root);
    PGconn *c = PQconnectdb(argv[3]);
    if (PQstatus(c) != CONNECTION_OK)
        die("database", PQerrorMessage(c));
    PQclear(PQexec(c, "SET search_path = support, public"));
    PQclear(PQexec(c, "SET plan_cache_mode = force_custom_plan"));
    PGresult *p = PQprepare(c, "list", SUPPORT_LIST_BY_CREATED, 16, NULL);
    if (PQresultStatus(p) != PGRES_COMMAND_OK)
        die("prepare", PQerrorMessage(c));
    PQclear(p);
    PGresult *n = PQexec(c, "SELECT count(*), count(DISTINCT organization_id) FROM tickets");
    printf("%s tickets in %s organizations; %ld calls per line, one at a time, page of 50\n",
           PQgetvalue(n, 0, 0), PQgetvalue(n, 0, 1), calls);
    PQclear(n);
    /* Warm both paths (connections, plans, caches) before measuring. */
    stats_t g, q;
    bench_pair(gw, cust, c, false, &kinds[0], 20, &g, &q);
    printf("%-9s %-12s %20s %20s %9s %6s\n", "caller", "query", "gateway p50/p99 ms",
           "SQL alone p50/p99 ms", "p50 ratio", "rows");
    for (int staff = 0; staff < 2; staff++)
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            bench_pair(gw, staff ? root : cust, c, staff, &kinds[k], calls, &g, &q);
            printf("%-9s %-12s %9.2f / %8.2f %9.2f / %8.2f %8.2fx %6.1f\n",
                   staff ? "staff" : "customer", kinds[k].name, g.p50, g.p99, q.p50, q.p99,
                   g.p50 / q.p50, g.rows);
        }
    explain(c, false, "modem offline");
    explain(c, true, "modem");
    PQfinish(c);
    rpc_channel_free(gw);
    arena_free(a);
    return 0;
}
