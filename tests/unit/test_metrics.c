/* The metrics registry and its text exposition: escaping, cumulative
 * buckets, counts by code, concurrent increments, and the HTTP endpoint. */
#include "onceiot/mem.h"
#include "onceiot/metrics.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void setup(void)
{
    metrics_enable();
}

TestSuite(metrics, .init = setup);

static bool rendered_has(const char *needle)
{
    size_t len;
    char *text = metrics_render(&len);
    bool found = strstr(text, needle) != NULL;
    if (!found)
        cr_log_error("missing %s in:\n%s", needle, text);
    mem_free(text);
    return found;
}

Test(metrics, label_values_and_help_are_escaped)
{
    static const char *const labels[] = {"what", NULL};
    metrics_family_t *f = metrics_counter("t_escaped_total", "a \\ help\nline", labels);
    metrics_series_t *s = metrics_series(f, (const char *const[]){"a\"b\\c\nd"});
    metrics_inc(s, 3);
    cr_assert(rendered_has("# HELP t_escaped_total a \\\\ help\\nline\n"));
    cr_assert(rendered_has("# TYPE t_escaped_total counter\n"));
    cr_assert(rendered_has("t_escaped_total{what=\"a\\\"b\\\\c\\nd\"} 3\n"));
}

Test(metrics, the_same_labels_give_the_same_series)
{
    static const char *const labels[] = {"a", "b", NULL};
    metrics_family_t *f = metrics_counter("t_same_total", "same", labels);
    cr_assert_eq(metrics_counter("t_same_total", "same", labels), f);
    metrics_series_t *x = metrics_series(f, (const char *const[]){"1", "2"});
    cr_assert_eq(metrics_series(f, (const char *const[]){"1", "2"}), x);
    cr_assert_neq(metrics_series(f, (const char *const[]){"1", "3"}), x);
}

Test(metrics, histogram_buckets_are_cumulative_with_sum_and_count)
{
    const double bounds[] = {0.1, 1, 10};
    metrics_series_t *s =
        metrics_series(metrics_histogram("t_seconds", "hist", NULL, bounds, 3), NULL);
    metrics_observe(s, 0.05);
    metrics_observe(s, 0.1); /* le is inclusive */
    metrics_observe(s, 5);
    metrics_observe(s, 50);
    cr_assert(rendered_has("# TYPE t_seconds histogram\n"));
    cr_assert(rendered_has("t_seconds_bucket{le=\"0.1\"} 2\n"));
    cr_assert(rendered_has("t_seconds_bucket{le=\"1\"} 2\n"));
    cr_assert(rendered_has("t_seconds_bucket{le=\"10\"} 3\n"));
    cr_assert(rendered_has("t_seconds_bucket{le=\"+Inf\"} 4\n"));
    cr_assert(rendered_has("t_seconds_sum 55.15\n"));
    cr_assert(rendered_has("t_seconds_count 4\n"));
}

Test(metrics, rpc_series_carry_the_grpc_prometheus_labels)
{
    metrics_rpc_t *m = metrics_rpc_new("/pkg.v1.Svc/Get", false, true, false);
    cr_assert(m);
    cr_assert_null(metrics_rpc_new("no-slash", false, false, false));
    metrics_rpc_started(m);
    metrics_rpc_handled(m, 5, 2000000);
    metrics_rpc_handled(m, 99, 1000); /* out of range: Unknown */
    cr_assert(rendered_has("grpc_server_started_total{grpc_type=\"server_stream\",grpc_service="
                           "\"pkg.v1.Svc\",grpc_method=\"Get\"} 1\n"));
    cr_assert(rendered_has("grpc_server_handled_total{grpc_type=\"server_stream\",grpc_service="
                           "\"pkg.v1.Svc\",grpc_method=\"Get\",grpc_code=\"NotFound\"} 1\n"));
    cr_assert(rendered_has("grpc_server_handled_total{grpc_type=\"server_stream\",grpc_service="
                           "\"pkg.v1.Svc\",grpc_method=\"Get\",grpc_code=\"Unknown\"} 1\n"));
    cr_assert(rendered_has("grpc_server_handling_seconds_bucket{grpc_type=\"server_stream\","
                           "grpc_service=\"pkg.v1.Svc\",grpc_method=\"Get\",le=\"0.005\"} 2\n"));
}

static metrics_series_t *race_series;

static void *race_main(void *arg)
{
    metrics_by_code_t *m = arg;
    for (int i = 0; i < 100000; i++) {
        metrics_inc(race_series, 1);
        metrics_by_code_inc(m, i % 2 ? 0 : 14);
    }
    return NULL;
}

Test(metrics, concurrent_increments_are_all_counted)
{
    static const char *const labels[] = {"who", "grpc_code", NULL};
    metrics_family_t *f = metrics_counter("t_race_total", "race", labels);
    metrics_by_code_t *m = metrics_by_code_new(f, (const char *const[]){"x"});
    race_series = metrics_series(metrics_counter("t_plain_total", "plain", NULL), NULL);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, race_main, m);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_assert(rendered_has("t_plain_total 400000\n"));
    cr_assert(rendered_has("t_race_total{who=\"x\",grpc_code=\"OK\"} 200000\n"));
    cr_assert(rendered_has("t_race_total{who=\"x\",grpc_code=\"Unavailable\"} 200000\n"));
}

static int collected;

static void collect(void *arg)
{
    metrics_set(arg, ++collected);
}

Test(metrics, collectors_run_before_each_render)
{
    metrics_series_t *g = metrics_series(metrics_gauge("t_gauge", "gauge", NULL), NULL);
    metrics_collector_add(collect, g);
    cr_assert(rendered_has("t_gauge 1\n"));
    cr_assert(rendered_has("t_gauge 2\n"));
    metrics_collector_remove(collect, g);
    cr_assert(rendered_has("t_gauge 2\n"));
}

Test(metrics, http_serves_metrics_and_404_elsewhere)
{
    metrics_inc(metrics_series(metrics_counter("t_http_total", "http", NULL), NULL), 7);
    metrics_process_register();
    int port = 0;
    cr_assert_eq(metrics_http_start("127.0.0.1:0", &port), 0);
    cr_assert_gt(port, 0);
    const char *paths[] = {"/metrics", "/other"};
    for (int i = 0; i < 2; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        char req[128];
        int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", paths[i]);
        cr_assert_eq(write(fd, req, (size_t)n), n);
        static char buf[1 << 20];
        size_t len = 0;
        ssize_t r;
        while ((r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
            len += (size_t)r;
        buf[len] = '\0';
        close(fd);
        if (i == 0) {
            cr_assert(strstr(buf, "HTTP/1.1 200"), "%s", buf);
            cr_assert(strstr(buf, "text/plain; version=0.0.4"));
            cr_assert(strstr(buf, "\nt_http_total 7\n"));
            cr_assert(strstr(buf, "\nprocess_open_fds "));
            cr_assert(strstr(buf, "\nprocess_start_time_seconds "));
        } else {
            cr_assert(strstr(buf, "HTTP/1.1 404"), "%s", buf);
        }
    }
    metrics_http_stop();
    metrics_http_stop();
}
