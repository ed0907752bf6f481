/* JSON-lines logging: stderr is captured into a file and every line is parsed
 * by Python's json module, which also hands back the decoded values so the
 * escaping is checked end to end. */
#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[] = "/tmp/onceiot-test-log-XXXXXX";
static int saved_stderr = -1;

static void setup(void)
{
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    saved_stderr = dup(STDERR_FILENO);
    cr_assert(dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    close(fd);
    log_init("testlog", LOG_DEBUG);
}

/* Puts stderr back; the captured file stays until teardown. */
static void release(void)
{
    if (saved_stderr >= 0) {
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        saved_stderr = -1;
    }
}

static void teardown(void)
{
    release();
    unlink(path);
}

TestSuite(log, .init = setup, .fini = teardown);

/* The whole captured output, NUL-terminated; *len gets its length. */
static char *captured(size_t *len)
{
    release();
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    size_t cap = 1 << 16, n = 0;
    char *buf = mem_alloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            buf = mem_realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Checks every captured line with Python's json module: each is a JSON object
 * with a timestamp, level, service and event, and the output ends with a
 * newline. Prints one line per log line: the value of key, as hex of its
 * UTF-8 bytes when it is a string, as JSON otherwise, "-" when absent. */
static const char *const checker =
    "import json, re, sys\n"
    "data = sys.stdin.buffer.read()\n"
    "assert data.endswith(b\"\\n\"), \"output does not end with a newline\"\n"
    "for raw in data.split(b\"\\n\")[:-1]:\n"
    "    o = json.loads(raw.decode(\"utf-8\"))\n"
    "    assert isinstance(o, dict), raw\n"
    "    assert re.fullmatch(r\"\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z\", o[\"ts\"]), "
    "raw\n"
    "    for k in (\"level\", \"service\", \"event\"):\n"
    "        assert isinstance(o[k], str), (k, raw)\n"
    "    v = o.get(sys.argv[1], \"-\")\n"
    "    print(v.encode().hex() if isinstance(v, str) and v != \"-\" else\n"
    "          v if v == \"-\" else json.dumps(v))\n";

/* Runs the checker over the captured output and returns what it printed
 * (mem_free it); fails the test if any line is not valid. */
static char *json_values(const char *key)
{
    release();
    char script[] = "/tmp/onceiot-test-log-py-XXXXXX";
    int fd = mkstemp(script);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, checker, strlen(checker)), (ssize_t)strlen(checker));
    close(fd);
    char *cmd = mem_printf("/usr/bin/python3 %s '%s' < %s", script, key, path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 16, n = 0, got;
    char *out = mem_alloc(cap);
    while ((got = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            out = mem_realloc(out, cap *= 2);
    }
    out[n] = '\0';
    int status = pclose(p);
    unlink(script);
    mem_free(cmd);
    cr_assert_eq(status, 0, "a log line is not valid JSON (see the Python error above)");
    return out;
}

static char *hex(const char *s)
{
    size_t n = strlen(s);
    char *h = mem_alloc(2 * n + 1);
    for (size_t i = 0; i < n; i++)
        snprintf(h + 2 * i, 3, "%02x", (unsigned char)s[i]);
    h[2 * n] = '\0';
    return h;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

Test(log, lines_are_json_with_ts_level_service_and_event)
{
    log_msg(LOG_INFO, "started", "listening on %s", "127.0.0.1:1");
    log_rec_t r;
    log_begin(&r, LOG_WARN, "call");
    log_str(&r, "method", "/a.B/C");
    log_str(&r, "nothing", NULL);
    log_int(&r, "code", -42);
    log_double(&r, "duration_ms", 1.5);
    log_bool(&r, "cancelled", true);
    log_end(&r);

    char *out = captured(NULL);
    cr_assert_eq(count_lines(out), 2, "%s", out);
    cr_assert(strncmp(out, "{\"ts\":\"", 7) == 0, "%s", out);
    cr_assert(strstr(out, "\"level\":\"info\",\"service\":\"testlog\",\"event\":\"started\""), "%s",
              out);
    mem_free(out);

    char *v = json_values("code");
    cr_assert_str_eq(v, "-\n-42\n");
    mem_free(v);
    v = json_values("duration_ms");
    cr_assert_str_eq(v, "-\n1.5\n");
    mem_free(v);
    v = json_values("cancelled");
    cr_assert_str_eq(v, "-\ntrue\n");
    mem_free(v);
    v = json_values("nothing");
    cr_assert_str_eq(v, "-\nnull\n");
    mem_free(v);
    v = json_values("level");
    char *want = mem_printf("%s\n%s\n", "696e666f" /* info */, "7761726e" /* warn */);
    cr_assert_str_eq(v, want);
    mem_free(want);
    mem_free(v);
}

Test(log, quotes_backslashes_newlines_and_control_bytes_are_escaped)
{
    static const char nasty[] = "say \"hi\" \\ C:\\dir\nsecond line\r\ttab \x01\x02\x1b\x1f"
                                " del\x7f umlaut \xc3\xbc euro \xe2\x82\xac emoji \xf0\x9f\x93\xb6";
    log_rec_t r;
    log_begin(&r, LOG_INFO, "ev\"il\nevent");
    log_str(&r, "msg", nasty);
    log_str(&r, "k\"ey\n", "v");
    log_end(&r);

    size_t len;
    char *out = captured(&len);
    cr_assert_eq(count_lines(out), 1, "one physical line: %s", out);
    cr_assert_eq(out[len - 1], '\n');
    cr_assert(strstr(out, "\\u0001\\u0002\\u001b\\u001f"), "%s", out);
    cr_assert(strstr(out, "say \\\"hi\\\" \\\\ C:\\\\dir\\nsecond line\\r\\ttab"), "%s", out);
    mem_free(out);

    char *v = json_values("msg");
    char *want = hex(nasty);
    cr_assert_eq(strlen(v), strlen(want) + 1);
    cr_assert(strncmp(v, want, strlen(want)) == 0, "decoded value differs:\n%s\n%s", v, want);
    mem_free(want);
    mem_free(v);
    v = json_values("event");
    want = hex("ev\"il\nevent");
    cr_assert(strncmp(v, want, strlen(want)) == 0, "%s", v);
    mem_free(want);
    mem_free(v);
}

Test(log, bytes_that_are_not_utf8_still_give_valid_json)
{
    log_rec_t r;
    log_begin(&r, LOG_INFO, "bad_utf8");
    /* A stray continuation, a bad lead, a truncated sequence, an overlong
     * slash, a surrogate, then plain text. */
    log_str(&r, "msg", "a\x80 b\xff c\xe2\x82 d\xc0\xaf e\xed\xa0\x80 ok");
    log_end(&r);
    char *v = json_values("msg");
    char *want =
        hex("a\xef\xbf\xbd b\xef\xbf\xbd c\xef\xbf\xbd\xef\xbf\xbd d\xef\xbf\xbd\xef\xbf\xbd"
            " e\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd ok");
    cr_assert(strncmp(v, want, strlen(want)) == 0, "got %s", v);
    mem_free(want);
    mem_free(v);
}

/* Builds a string of count copies of unit. */
static char *repeat(const char *unit, size_t count)
{
    size_t n = strlen(unit);
    char *s = mem_alloc(n * count + 1);
    for (size_t i = 0; i < count; i++)
        memcpy(s + i * n, unit, n);
    s[n * count] = '\0';
    return s;
}

/* Logs value under "msg" with fields before and after it, and checks the line
 * is cut to the buffer, still valid JSON and still ends with "}\n", and that
 * the decoded value is a long prefix of value. */
static void check_truncated(const char *value)
{
    log_rec_t r;
    log_begin(&r, LOG_ERROR, "long");
    log_int(&r, "before", 7);
    log_str(&r, "msg", value);
    log_int(&r, "after", 8);
    log_str(&r, "after_str", "x");
    log_end(&r);

    size_t len;
    char *out = captured(&len);
    cr_assert_eq(count_lines(out), 1);
    cr_assert_leq(len, sizeof(r.buf));
    cr_assert_gt(len, sizeof(r.buf) - 16, "the line was filled, not cut short (%zu)", len);
    cr_assert(len >= 2 && out[len - 2] == '}' && out[len - 1] == '\n', "ends with %.10s",
              out + len - 10);
    mem_free(out);

    char *v = json_values("before");
    cr_assert_str_eq(v, "7\n");
    mem_free(v);
    v = json_values("after");
    cr_assert_str_eq(v, "-\n", "a field that no longer fits is left out whole");
    mem_free(v);
    v = json_values("msg");
    char *want = hex(value);
    size_t got = strlen(v) - 1;
    cr_assert_gt(got, 2 * 500, "the line is filled with as much of the value as fits");
    cr_assert_lt(got, strlen(want));
    cr_assert(strncmp(v, want, got) == 0, "the kept part is a prefix of the value");
    mem_free(want);
    mem_free(v);
}

Test(log, a_very_long_value_is_truncated_and_the_line_stays_valid)
{
    char *s = repeat("a", 10000);
    check_truncated(s);
    mem_free(s);
}

Test(log, truncation_never_splits_an_escape)
{
    char *s = repeat("\"\x01", 3000);
    check_truncated(s);
    mem_free(s);
}

Test(log, truncation_never_splits_a_utf8_character)
{
    char *s = repeat("\xe2\x82\xac", 3000);
    check_truncated(s);
    mem_free(s);
}

Test(log, a_full_line_drops_later_fields_of_every_type)
{
    char *s = repeat("z", 5000);
    log_rec_t r;
    log_begin(&r, LOG_INFO, "full");
    log_str(&r, "msg", s);
    log_str(&r, "s", NULL);
    log_int(&r, "i", 1);
    log_double(&r, "d", 2.0);
    log_bool(&r, "b", false);
    log_end(&r);
    mem_free(s);
    char *v = json_values("b");
    cr_assert_str_eq(v, "-\n");
    mem_free(v);
}

Test(log, non_finite_doubles_are_null)
{
    log_rec_t r;
    log_begin(&r, LOG_INFO, "nan");
    log_double(&r, "x", NAN);
    log_double(&r, "y", INFINITY);
    log_end(&r);
    char *v = json_values("x");
    cr_assert_str_eq(v, "null\n");
    mem_free(v);
    v = json_values("y");
    cr_assert_str_eq(v, "null\n");
    mem_free(v);
}

Test(log, levels_below_the_minimum_are_dropped)
{
    log_init("testlog", LOG_WARN);
    cr_assert_not(log_enabled(LOG_DEBUG));
    cr_assert_not(log_enabled(LOG_INFO));
    cr_assert(log_enabled(LOG_WARN));
    cr_assert(log_enabled(LOG_ERROR));
    log_msg(LOG_DEBUG, "dropped_debug", "x");
    log_msg(LOG_INFO, "dropped_info", "x");
    log_rec_t r;
    log_begin(&r, LOG_INFO, "dropped_rec");
    cr_assert_not(r.on);
    log_str(&r, "k", "v");
    log_int(&r, "n", 1);
    log_end(&r);
    log_msg(LOG_WARN, "kept_warn", "x");
    log_msg(LOG_ERROR, "kept_error", "x");

    char *out = captured(NULL);
    cr_assert_eq(count_lines(out), 2, "%s", out);
    cr_assert_null(strstr(out, "dropped"), "%s", out);
    cr_assert(strstr(out, "\"level\":\"warn\",\"service\":\"testlog\",\"event\":\"kept_warn\""));
    cr_assert(strstr(out, "\"level\":\"error\",\"service\":\"testlog\",\"event\":\"kept_error\""));
    mem_free(out);
}

Test(log, level_names_parse)
{
    cr_assert_eq(log_level_parse("debug"), LOG_DEBUG);
    cr_assert_eq(log_level_parse("info"), LOG_INFO);
    cr_assert_eq(log_level_parse("warn"), LOG_WARN);
    cr_assert_eq(log_level_parse("error"), LOG_ERROR);
    cr_assert_eq(log_level_parse("warning"), -1);
    cr_assert_eq(log_level_parse(""), -1);
    cr_assert_eq(log_level_parse("fatal"), -1);
}

enum { THREADS = 4, LINES = 200 };

static void *log_lines(void *arg)
{
    char value[1500];
    memset(value, 'a' + (int)(long)arg, sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    for (int i = 0; i < LINES; i++) {
        log_rec_t r;
        log_begin(&r, LOG_INFO, "concurrent");
        log_int(&r, "thread", (long)arg);
        log_str(&r, "msg", value);
        log_end(&r);
    }
    return NULL;
}

Test(log, lines_from_concurrent_threads_never_interleave)
{
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, log_lines, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *v = json_values("thread");
    cr_assert_eq(count_lines(v), THREADS * LINES);
    mem_free(v);
}

/* A thread's trace id goes on every line it begins until it is put back,
 * and on no other thread's lines. */
static void *log_untraced(void *arg)
{
    (void)arg;
    log_msg(LOG_INFO, "other_thread", "no trace here");
    return NULL;
}

Test(log, the_trace_id_of_the_thread_is_on_its_lines_until_put_back)
{
    const char *id = "4bf92f3577b34da6a3ce929d0e0e4736";
    cr_assert_null(log_set_trace_id(id));
    log_msg(LOG_INFO, "traced", "one");
    pthread_t t;
    pthread_create(&t, NULL, log_untraced, NULL);
    pthread_join(t, NULL);
    cr_assert_str_eq(log_set_trace_id(NULL), id);
    log_msg(LOG_INFO, "untraced", "two");
    char *out = captured(NULL);
    cr_assert(strstr(out, "\"event\":\"traced\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""),
              "%s", out);
    const char *other = strstr(out, "\"other_thread\"");
    cr_assert(other && strstr(other, "\"untraced\""), "%s", out);
    cr_assert_null(strstr(other, "trace_id"), "%s", out);
    mem_free(out);
}

/* ---- the writer thread ---- */

static void *log_numbered(void *arg)
{
    char value[1500];
    memset(value, 'a' + (int)(long)arg, sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    for (int i = 0; i < LINES; i++) {
        log_rec_t r;
        log_begin(&r, LOG_INFO, "numbered");
        log_int(&r, "seq", (long)arg * LINES + i);
        log_str(&r, "msg", value);
        log_end(&r);
    }
    return NULL;
}

/* The smallest ring (two of the longest lines) so that callers keep waiting
 * for room: every line still arrives whole, none twice, each thread's in its
 * order, once the writer is stopped. */
Test(log, through_the_writer_every_line_arrives_whole_and_in_each_threads_order)
{
    cr_assert_eq(log_writer_start(1), 0);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, log_numbered, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    log_writer_stop();
    char *v = json_values("seq");
    cr_assert_eq(count_lines(v), THREADS * LINES);
    long next[THREADS] = {0};
    for (char *line = strtok(v, "\n"); line; line = strtok(NULL, "\n")) {
        long seq = strtol(line, NULL, 10), thread = seq / LINES;
        cr_assert(thread >= 0 && thread < THREADS, "%s", line);
        cr_assert_eq(seq % LINES, next[thread], "thread %ld: line %ld after %ld", thread,
                     seq % LINES, next[thread] - 1);
        next[thread]++;
    }
    mem_free(v);
}

/* An error goes out before log_msg returns, after every line before it,
 * while the writer runs: the line that explains a crash is never left in
 * the ring. log_flush waits for the rest. */
Test(log, an_error_line_is_written_at_once_after_the_lines_before_it)
{
    cr_assert_eq(log_writer_start(1 << 20), 0);
    for (int i = 0; i < 100; i++)
        log_msg(LOG_INFO, "before", "line %d", i);
    log_msg(LOG_ERROR, "fatal", "the last word");
    char *out = captured(NULL); /* stderr is put back: later writes go there */
    cr_assert_eq(count_lines(out), 101, "every line up to the error is in the file");
    char *last = strrchr(out, '{');
    cr_assert(strstr(last, "\"event\":\"fatal\""), "%s", last);
    mem_free(out);
    log_writer_stop();
}

/* log_flush returns once what was handed over is written; lines after
 * log_writer_stop are written by their callers. */
Test(log, flush_waits_for_the_writer_and_stop_goes_back_to_direct_writes)
{
    cr_assert_eq(log_writer_start(1 << 16), 0);
    for (int i = 0; i < 500; i++)
        log_msg(LOG_INFO, "buffered", "line %d", i);
    log_flush();
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    size_t len;
    char *out = captured(&len);
    cr_assert_eq(count_lines(out), 500);
    cr_assert_eq((size_t)st.st_size, len);
    mem_free(out);
    log_writer_stop();
    log_writer_stop(); /* twice is harmless */
}
