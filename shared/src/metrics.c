/* The metrics registry, its text exposition (format 0.0.4), the process
 * collector and the HTTP endpoint.
 *
 * Families and series are never freed: they are few (one per metric, one per
 * label combination of bounded cardinality: methods, codes, upstreams) and
 * live as long as the process, so that callers may keep series pointers
 * without reference counting. Updates are relaxed atomics on the series;
 * the lists are appended under the family's lock and read under it at
 * scrape time. */
#include "onceiot/metrics.h"

#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <dirent.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef enum { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM } metrics_kind_t;

struct metrics_series {
    metrics_series_t *next;
    char **values;             /* one per label name, mem_strdup */
    atomic_ullong n;           /* counter: increments */
    atomic_ullong bits;        /* gauge or mirrored counter: the double's bits */
    atomic_llong sum_nano;     /* histogram: sum of observations, in 1e-9 units */
    atomic_ullong *buckets;    /* histogram: n_bounds + 1 (the last is +Inf), not cumulative */
    const metrics_family_t *f; /* its family */
};

struct metrics_family {
    metrics_family_t *next;
    const char *name;
    const char *help;
    metrics_kind_t kind;
    const char *const *labels; /* NULL-terminated, or NULL */
    size_t n_labels;
    double *bounds;
    size_t n_bounds;
    pthread_mutex_t mu; /* guards the series list */
    metrics_series_t *series;
    metrics_series_t **tail;
};

typedef struct metrics_collector {
    metrics_collect_fn fn;
    void *arg;
} metrics_collector_t;

static atomic_bool metrics__on;
static pthread_mutex_t metrics__mu = PTHREAD_MUTEX_INITIALIZER; /* families */
static metrics_family_t *metrics__families;
static metrics_family_t **metrics__tail = &metrics__families;
static pthread_mutex_t metrics__coll_mu = PTHREAD_MUTEX_INITIALIZER; /* collectors */
static metrics_collector_t *metrics__collectors;
static size_t metrics__n_collectors;
static struct MHD_Daemon *metrics__daemon;
/* Process-lived helpers (metrics.h), listed under metrics__mu. */
static struct metrics_rpc *metrics__rpcs;
static struct metrics_by_code *metrics__by_codes; /* start/stop run on the main thread */

void metrics_enable(void)
{
    atomic_store(&metrics__on, true);
}

bool metrics_enabled(void)
{
    return atomic_load_explicit(&metrics__on, memory_order_relaxed);
}

static metrics_family_t *metrics__family(const char *name, const char *help, metrics_kind_t kind,
                                         const char *const *labels, const double *bounds,
                                         size_t n_bounds)
{
    if (!metrics_enabled())
        return NULL;
    pthread_mutex_lock(&metrics__mu);
    metrics_family_t *f;
    for (f = metrics__families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (!f) {
        f = mem_calloc(1, sizeof(*f));
        f->name = name;
        f->help = help;
        f->kind = kind;
        f->labels = labels;
        while (labels && labels[f->n_labels])
            f->n_labels++;
        if (n_bounds) {
            f->bounds = mem_calloc(n_bounds, sizeof(double));
            memcpy(f->bounds, bounds, n_bounds * sizeof(double));
            f->n_bounds = n_bounds;
        }
        pthread_mutex_init(&f->mu, NULL);
        f->tail = &f->series;
        *metrics__tail = f;
        metrics__tail = &f->next;
    }
    pthread_mutex_unlock(&metrics__mu);
    return f;
}

metrics_family_t *metrics_counter(const char *name, const char *help, const char *const *labels)
{
    return metrics__family(name, help, METRICS_COUNTER, labels, NULL, 0);
}

metrics_family_t *metrics_gauge(const char *name, const char *help, const char *const *labels)
{
    return metrics__family(name, help, METRICS_GAUGE, labels, NULL, 0);
}

metrics_family_t *metrics_histogram(const char *name, const char *help, const char *const *labels,
                                    const double *bounds, size_t n_bounds)
{
    return metrics__family(name, help, METRICS_HISTOGRAM, labels, bounds, n_bounds);
}

metrics_series_t *metrics_series(metrics_family_t *f, const char *const *values)
{
    if (!f)
        return NULL;
    pthread_mutex_lock(&f->mu);
    metrics_series_t *s;
    for (s = f->series; s; s = s->next) {
        size_t i = 0;
        while (i < f->n_labels && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == f->n_labels)
            break;
    }
    if (!s) {
        s = mem_calloc(1, sizeof(*s));
        s->f = f;
        s->values = mem_calloc(f->n_labels ? f->n_labels : 1, sizeof(char *));
        for (size_t i = 0; i < f->n_labels; i++)
            s->values[i] = mem_strdup(values[i]);
        if (f->kind == METRICS_HISTOGRAM)
            s->buckets = mem_calloc(f->n_bounds + 1, sizeof(*s->buckets));
        *f->tail = s;
        f->tail = &s->next;
    }
    pthread_mutex_unlock(&f->mu);
    return s;
}

metrics_series_t *metrics_counter_plain(const char *name, const char *help)
{
    return metrics_series(metrics_counter(name, help, NULL), NULL);
}

metrics_series_t *metrics_gauge_plain(const char *name, const char *help)
{
    return metrics_series(metrics_gauge(name, help, NULL), NULL);
}

void metrics_inc(metrics_series_t *s, uint64_t n)
{
    if (s)
        atomic_fetch_add_explicit(&s->n, n, memory_order_relaxed);
}

void metrics_set(metrics_series_t *s, double v)
{
    if (!s)
        return;
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    atomic_store_explicit(&s->bits, bits, memory_order_relaxed);
}

void metrics_observe(metrics_series_t *s, double v)
{
    if (!s)
        return;
    const metrics_family_t *f = s->f;
    size_t i = 0;
    while (i < f->n_bounds && v > f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_nano, (long long)llround(v * 1e9), memory_order_relaxed);
}

void metrics_collector_add(metrics_collect_fn fn, void *arg)
{
    if (!metrics_enabled())
        return;
    pthread_mutex_lock(&metrics__coll_mu);
    metrics__collectors = mem_realloc(metrics__collectors,
                                      (metrics__n_collectors + 1) * sizeof(*metrics__collectors));
    metrics__collectors[metrics__n_collectors++] = (metrics_collector_t){fn, arg};
    pthread_mutex_unlock(&metrics__coll_mu);
}

void metrics_collector_remove(metrics_collect_fn fn, void *arg)
{
    pthread_mutex_lock(&metrics__coll_mu);
    for (size_t i = 0; i < metrics__n_collectors; i++) {
        if (metrics__collectors[i].fn == fn && metrics__collectors[i].arg == arg) {
            metrics__collectors[i] = metrics__collectors[--metrics__n_collectors];
            break;
        }
    }
    pthread_mutex_unlock(&metrics__coll_mu);
}

/* ---- exposition ---- */

typedef struct metrics_buf {
    char *p;
    size_t len, cap;
} metrics_buf_t;

static void metrics__put(metrics_buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = mem_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void metrics__puts(metrics_buf_t *b, const char *s)
{
    metrics__put(b, s, strlen(s));
}

/* HELP text escapes backslash and newline; label values also the quote. */
static void metrics__escaped(metrics_buf_t *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            metrics__puts(b, "\\\\");
        else if (*s == '\n')
            metrics__puts(b, "\\n");
        else if (quote && *s == '"')
            metrics__puts(b, "\\\"");
        else
            metrics__put(b, s, 1);
    }
}

/* A sample value as Prometheus reads it: the shortest of %.15g/%.17g that
 * reads back exactly, +Inf, -Inf or NaN. */
static void metrics__number(metrics_buf_t *b, double v)
{
    char s[40];
    if (isnan(v)) {
        metrics__puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        metrics__puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    snprintf(s, sizeof(s), "%.15g", v);
    if (strtod(s, NULL) != v)
        snprintf(s, sizeof(s), "%.17g", v);
    metrics__puts(b, s);
}

/* name{l1="v1",...,extra="xv"} value\n; extra may be NULL. */
static void metrics__sample(metrics_buf_t *b, const metrics_family_t *f, const char *suffix,
                            const metrics_series_t *s, const char *extra, const char *extra_value,
                            double v)
{
    metrics__puts(b, f->name);
    metrics__puts(b, suffix);
    if (f->n_labels || extra) {
        metrics__puts(b, "{");
        for (size_t i = 0; i < f->n_labels; i++) {
            if (i)
                metrics__puts(b, ",");
            metrics__puts(b, f->labels[i]);
            metrics__puts(b, "=\"");
            metrics__escaped(b, s->values[i], true);
            metrics__puts(b, "\"");
        }
        if (extra) {
            if (f->n_labels)
                metrics__puts(b, ",");
            metrics__puts(b, extra);
            metrics__puts(b, "=\"");
            metrics__puts(b, extra_value);
            metrics__puts(b, "\"");
        }
        metrics__puts(b, "}");
    }
    metrics__puts(b, " ");
    metrics__number(b, v);
    metrics__puts(b, "\n");
}

static double metrics__value(const metrics_series_t *s)
{
    uint64_t bits = atomic_load_explicit(&s->bits, memory_order_relaxed);
    double d;
    memcpy(&d, &bits, sizeof(d));
    return (double)atomic_load_explicit(&s->n, memory_order_relaxed) + d;
}

static void metrics__render_histogram(metrics_buf_t *b, const metrics_family_t *f,
                                      const metrics_series_t *s)
{
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i <= f->n_bounds; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        if (i < f->n_bounds)
            snprintf(le, sizeof(le), "%g", f->bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        metrics__sample(b, f, "_bucket", s, "le", le, (double)cum);
    }
    double sum = (double)atomic_load_explicit(&s->sum_nano, memory_order_relaxed) / 1e9;
    metrics__sample(b, f, "_sum", s, NULL, NULL, sum);
    /* The count is the +Inf bucket's, so the two always agree. */
    metrics__sample(b, f, "_count", s, NULL, NULL, (double)cum);
}

char *metrics_render(size_t *len)
{
    pthread_mutex_lock(&metrics__coll_mu);
    for (size_t i = 0; i < metrics__n_collectors; i++)
        metrics__collectors[i].fn(metrics__collectors[i].arg);
    pthread_mutex_unlock(&metrics__coll_mu);

    static const char *const kinds[] = {"counter", "gauge", "histogram"};
    metrics_buf_t b = {NULL, 0, 0};
    metrics__put(&b, "", 0);
    pthread_mutex_lock(&metrics__mu);
    for (const metrics_family_t *f = metrics__families; f; f = f->next) {
        metrics_family_t *mf = (metrics_family_t *)f;
        pthread_mutex_lock(&mf->mu);
        if (!f->series) {
            pthread_mutex_unlock(&mf->mu);
            continue;
        }
        metrics__puts(&b, "# HELP ");
        metrics__puts(&b, f->name);
        metrics__puts(&b, " ");
        metrics__escaped(&b, f->help, false);
        metrics__puts(&b, "\n# TYPE ");
        metrics__puts(&b, f->name);
        metrics__puts(&b, " ");
        metrics__puts(&b, kinds[f->kind]);
        metrics__puts(&b, "\n");
        for (const metrics_series_t *s = f->series; s; s = s->next) {
            if (f->kind == METRICS_HISTOGRAM)
                metrics__render_histogram(&b, f, s);
            else
                metrics__sample(&b, f, "", s, NULL, NULL, metrics__value(s));
        }
        pthread_mutex_unlock(&mf->mu);
    }
    pthread_mutex_unlock(&metrics__mu);
    *len = b.len;
    return b.p;
}

/* ---- process metrics, from /proc at scrape time ---- */

static struct {
    metrics_series_t *rss, *vsize, *cpu, *fds, *max_fds, *start;
} metrics__proc;

static void metrics__collect_process(void *arg)
{
    (void)arg;
    long tick = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    char buf[2048];
    FILE *fp = fopen("/proc/self/stat", "r");
    if (fp) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        /* Fields after the command's closing parenthesis, starting at the
         * third (state): utime is the 14th, stime 15th, vsize 23rd, rss 24th. */
        char *p = strrchr(buf, ')');
        unsigned long long v[22] = {0};
        int field = 3;
        if (p) {
            p += 2;
            while (*p && field <= 24) {
                char *end;
                if (field >= 14)
                    v[field - 3] = strtoull(p, &end, 10);
                else
                    end = strchr(p, ' ');
                if (!end || *end != ' ')
                    break;
                p = end + 1;
                field++;
            }
        }
        if (field > 24 && tick > 0) {
            metrics_set(metrics__proc.cpu, (double)(v[14 - 3] + v[15 - 3]) / (double)tick);
            metrics_set(metrics__proc.vsize, (double)v[23 - 3]);
            metrics_set(metrics__proc.rss, (double)v[24 - 3] * (double)page);
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        metrics_set(metrics__proc.fds, (double)(n - 1)); /* less the directory's own */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metrics_set(metrics__proc.max_fds, (double)rl.rlim_cur);
}

/* The process's start: boot time (btime of /proc/stat) plus its start in
 * clock ticks after boot (the 22nd field of /proc/self/stat). */
static double metrics__start_time(void)
{
    char buf[4096];
    double btime = 0;
    FILE *fp = fopen("/proc/stat", "r");
    if (fp) {
        while (fgets(buf, sizeof(buf), fp))
            if (strncmp(buf, "btime ", 6) == 0)
                btime = strtod(buf + 6, NULL);
        fclose(fp);
    }
    fp = fopen("/proc/self/stat", "r");
    if (!fp)
        return btime;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return btime;
    p += 2;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    long tick = sysconf(_SC_CLK_TCK);
    return p && tick > 0 ? btime + strtod(p, NULL) / (double)tick : btime;
}

void metrics_process_register(void)
{
    if (!metrics_enabled() || metrics__proc.rss)
        return;
    metrics__proc.rss =
        metrics_gauge_plain("process_resident_memory_bytes", "Resident memory size in bytes.");
    metrics__proc.vsize =
        metrics_gauge_plain("process_virtual_memory_bytes", "Virtual memory size in bytes.");
    metrics__proc.cpu = metrics_counter_plain("process_cpu_seconds_total",
                                              "Total user and system CPU time spent in seconds.");
    metrics__proc.fds = metrics_gauge_plain("process_open_fds", "Number of open file descriptors.");
    metrics__proc.max_fds =
        metrics_gauge_plain("process_max_fds", "Maximum number of open file descriptors.");
    metrics__proc.start = metrics_gauge_plain(
        "process_start_time_seconds", "Start time of the process since unix epoch in seconds.");
    metrics_set(metrics__proc.start, metrics__start_time());
    metrics_collector_add(metrics__collect_process, NULL);
}

/* ---- HTTP ---- */

static void metrics__free_body(void *p)
{
    mem_free(p);
}

static enum MHD_Result metrics__answer(void *cls, struct MHD_Connection *conn, const char *url,
                                       const char *method, const char *version,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **req_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    struct MHD_Response *r;
    unsigned int status;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static char msg[] = "only GET\n";
        r = MHD_create_response_from_buffer(sizeof(msg) - 1, msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") != 0) {
        static char msg[] = "metrics are at /metrics\n";
        r = MHD_create_response_from_buffer(sizeof(msg) - 1, msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_NOT_FOUND;
    } else {
        size_t len;
        char *body = metrics_render(&len);
        r = MHD_create_response_from_buffer_with_free_callback(len, body, metrics__free_body);
        if (r)
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8");
        else
            mem_free(body);
        status = MHD_HTTP_OK;
    }
    if (!r)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

int metrics_http_start(const char *listen, int *port_out)
{
    const char *colon = strrchr(listen, ':');
    if (!colon)
        return ERR_UNAVAILABLE;
    char host[256];
    size_t hn = (size_t)(colon - listen);
    if (hn >= sizeof(host))
        return ERR_UNAVAILABLE;
    memcpy(host, listen, hn);
    host[hn] = '\0';
    char *h = host;
    if (h[0] == '[' && hn >= 2 && h[hn - 1] == ']') {
        h[hn - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(*h ? h : NULL, colon + 1, &hints, &ai) != 0 || !ai) {
        log_msg(LOG_ERROR, "metrics_listen", "cannot resolve ONCEIOT_METRICS_LISTEN %s", listen);
        return ERR_UNAVAILABLE;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* A scrape is one short request: a few connections at once are plenty,
     * and a stuck one is dropped after 10 s. */
    metrics__daemon =
        MHD_start_daemon(flags, 0, NULL, NULL, metrics__answer, NULL, MHD_OPTION_SOCK_ADDR,
                         ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)16,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!metrics__daemon) {
        log_msg(LOG_ERROR, "metrics_listen", "cannot listen on ONCEIOT_METRICS_LISTEN %s", listen);
        return ERR_UNAVAILABLE;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(metrics__daemon, MHD_DAEMON_INFO_BIND_PORT);
    int port = info ? (int)info->port : 0;
    if (port_out)
        *port_out = port;
    log_rec_t r;
    log_begin(&r, LOG_INFO, "metrics_listening");
    log_str(&r, "listen", listen);
    log_int(&r, "port", port);
    log_end(&r);
    return 0;
}

void metrics_http_stop(void)
{
    if (!metrics__daemon)
        return;
    MHD_stop_daemon(metrics__daemon);
    metrics__daemon = NULL;
}

/* ---- gRPC ---- */

/* The names go-grpc-prometheus gives codes (Go's codes.Code.String()). */
static const char *const metrics__code_names[17] = {
    "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated"};

struct metrics_by_code {
    metrics_by_code_t *next; /* every one made, so that they stay reachable */
    metrics_family_t *f;
    char *values[8]; /* the other labels' values, then the code's slot */
    size_t n;        /* labels of f */
    metrics_series_t *_Atomic s[17];
};

metrics_by_code_t *metrics_by_code_new(metrics_family_t *f, const char *const *values)
{
    if (!f || f->n_labels == 0 || f->n_labels > 8)
        return NULL;
    metrics_by_code_t *m = mem_calloc(1, sizeof(*m));
    m->f = f;
    m->n = f->n_labels;
    for (size_t i = 0; i + 1 < m->n; i++)
        m->values[i] = mem_strdup(values[i]);
    pthread_mutex_lock(&metrics__mu);
    m->next = metrics__by_codes;
    metrics__by_codes = m;
    pthread_mutex_unlock(&metrics__mu);
    return m;
}

void metrics_by_code_inc(metrics_by_code_t *m, int code)
{
    if (!m)
        return;
    if (code < 0 || code > 16)
        code = 2; /* UNKNOWN */
    metrics_series_t *s = atomic_load_explicit(&m->s[code], memory_order_acquire);
    if (!s) {
        /* Two threads may both look it up: metrics_series gives both the
         * same series. */
        const char *v[8];
        for (size_t i = 0; i + 1 < m->n; i++)
            v[i] = m->values[i];
        v[m->n - 1] = metrics__code_names[code];
        s = metrics_series(m->f, v);
        atomic_store_explicit(&m->s[code], s, memory_order_release);
    }
    metrics_inc(s, 1);
}

struct metrics_rpc {
    metrics_rpc_t *next; /* every one made, so that they stay reachable */
    metrics_series_t *started;
    metrics_series_t *seconds;
    metrics_by_code_t *handled;
};

/* The defaults of Prometheus's client libraries (DefBuckets), as
 * go-grpc-prometheus uses them. */
static const double metrics__rpc_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,    2.5,   5,    10};

metrics_rpc_t *metrics_rpc_new(const char *path, bool client_streaming, bool server_streaming,
                               bool client)
{
    if (!metrics_enabled() || !path || path[0] != '/')
        return NULL;
    const char *slash = strchr(path + 1, '/');
    if (!slash || !slash[1])
        return NULL;
    static const char *const labels[] = {"grpc_type", "grpc_service", "grpc_method", NULL};
    static const char *const labels_code[] = {"grpc_type", "grpc_service", "grpc_method",
                                              "grpc_code", NULL};
    /* go-grpc-prometheus's names and help texts, server then client. */
    static const struct {
        const char *started, *started_help, *handled, *handled_help, *seconds, *seconds_help;
    } names[2] = {
        {"grpc_server_started_total", "Total number of RPCs started on the server.",
         "grpc_server_handled_total",
         "Total number of RPCs completed on the server, regardless of success or failure.",
         "grpc_server_handling_seconds",
         "Histogram of response latency (seconds) of gRPC that had been application-level "
         "handled by the server."},
        {"grpc_client_started_total", "Total number of RPCs started on the client.",
         "grpc_client_handled_total",
         "Total number of RPCs completed by the client, regardless of success or failure.",
         "grpc_client_handling_seconds",
         "Histogram of response latency (seconds) of the gRPC until it is finished by the "
         "application."},
    };
    const size_t k = client ? 1 : 0;
    metrics_family_t *started = metrics_counter(names[k].started, names[k].started_help, labels);
    metrics_family_t *handled =
        metrics_counter(names[k].handled, names[k].handled_help, labels_code);
    metrics_family_t *seconds =
        metrics_histogram(names[k].seconds, names[k].seconds_help, labels, metrics__rpc_bounds,
                          sizeof(metrics__rpc_bounds) / sizeof(double));
    const char *type = client_streaming ? (server_streaming ? "bidi_stream" : "client_stream")
                                        : (server_streaming ? "server_stream" : "unary");
    char *service = mem_strdup(path + 1);
    service[slash - path - 1] = '\0';
    const char *values[] = {type, service, slash + 1};
    metrics_rpc_t *m = mem_calloc(1, sizeof(*m));
    m->started = metrics_series(started, values);
    m->seconds = metrics_series(seconds, values);
    m->handled = metrics_by_code_new(handled, values);
    mem_free(service);
    pthread_mutex_lock(&metrics__mu);
    m->next = metrics__rpcs;
    metrics__rpcs = m;
    pthread_mutex_unlock(&metrics__mu);
    return m;
}

void metrics_rpc_started(metrics_rpc_t *m)
{
    if (m)
        metrics_inc(m->started, 1);
}

void metrics_rpc_handled(metrics_rpc_t *m, int code, int64_t duration_ns)
{
    if (!m)
        return;
    metrics_by_code_inc(m->handled, code);
    metrics_observe(m->seconds, (double)duration_ns / 1e9);
}
