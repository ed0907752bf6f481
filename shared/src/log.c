/* JSON-lines logging to stderr: one write(2) per line, or through the
 * writer thread's ring (log.h). */
#include "onceiot/log.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log__service = "onceiot";
static log_level_t log__min = LOG_INFO;
static const char *const log__names[] = {"debug", "info", "warn", "error"};
/* The trace id of the call this thread is working on (log_set_trace_id). */
static _Thread_local const char *log__trace_id;

void log_init(const char *service, log_level_t min_level)
{
    log__service = service;
    log__min = min_level;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, log__names[i]) == 0)
            return i;
    return -1;
}

const char *log_set_trace_id(const char *trace_id)
{
    const char *prev = log__trace_id;
    log__trace_id = trace_id;
    return prev;
}

bool log_enabled(log_level_t level)
{
    return level >= log__min;
}

/* Room left for field bytes: the closing "}\n" is always kept free. */
static size_t log__room(const log_rec_t *r)
{
    return sizeof(r->buf) - 3 - r->len;
}

/* Appends raw bytes if all of them fit; otherwise appends nothing. */
static bool log__raw(log_rec_t *r, const char *s, size_t n)
{
    if (n > log__room(r))
        return false;
    memcpy(r->buf + r->len, s, n);
    r->len += n;
    return true;
}

/* Length of the UTF-8 sequence starting at p, or 0 if p does not start a
 * well-formed one (a stray continuation byte, a bad lead, a short tail). */
static size_t log__utf8_len(const unsigned char *p)
{
    size_t n = *p >= 0xf0 && *p <= 0xf4 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc2 && *p < 0xe0 ? 2 : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are
     * not UTF-8 either. */
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
        return 0;
    return n;
}

/* Appends s as a JSON string. A value too long for the line is cut between
 * characters (never inside an escape or a UTF-8 sequence) and the string is
 * still closed, so the line stays valid JSON. Bytes that are not UTF-8 become
 * U+FFFD. Returns false, appending nothing, when not even "" fits. */
static bool log__quoted(log_rec_t *r, const char *s)
{
    if (log__room(r) < 2)
        return false;
    r->buf[r->len++] = '"';
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        char esc[8];
        const char *unit = esc;
        size_t n = 2, adv = 1;
        switch (*p) {
        case '"':
            unit = "\\\"";
            break;
        case '\\':
            unit = "\\\\";
            break;
        case '\n':
            unit = "\\n";
            break;
        case '\r':
            unit = "\\r";
            break;
        case '\t':
            unit = "\\t";
            break;
        default:
            if (*p < 0x20) {
                n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
            } else if (*p < 0x80) {
                unit = (const char *)p;
                n = 1;
            } else if ((adv = log__utf8_len(p)) != 0) {
                unit = (const char *)p;
                n = adv;
            } else {
                unit = "\\ufffd";
                n = 6;
                adv = 1;
            }
        }
        /* One byte stays free for the closing quote. */
        if (n >= log__room(r))
            break;
        memcpy(r->buf + r->len, unit, n);
        r->len += n;
        p += adv;
    }
    r->buf[r->len++] = '"';
    return true;
}

/* Appends ,"key": and returns whether it fit. */
static bool log__key(log_rec_t *r, const char *key)
{
    return log__raw(r, ",", 1) && log__quoted(r, key) && log__raw(r, ":", 1);
}

/* Appends ,"key":<raw value> whole or not at all, so a full line never ends
 * in half a field. */
static void log__field(log_rec_t *r, const char *key, const char *value, size_t n)
{
    size_t mark = r->len;
    if (!log__key(r, key) || !log__raw(r, value, n))
        r->len = mark;
}

void log_begin(log_rec_t *r, log_level_t level, const char *event)
{
    r->len = 0;
    r->level = level;
    r->on = log_enabled(level);
    if (!r->on)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char head[96];
    int n = snprintf(head, sizeof(head), "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000);
    log__raw(r, head, (size_t)n);
    log__key(r, "level");
    log__quoted(r, log__names[level]);
    log__key(r, "service");
    log__quoted(r, log__service);
    log__key(r, "event");
    log__quoted(r, event);
    if (log__trace_id && *log__trace_id) {
        log__key(r, "trace_id");
        log__quoted(r, log__trace_id);
    }
}

void log_str(log_rec_t *r, const char *key, const char *value)
{
    if (!r->on)
        return;
    if (!value) {
        log__field(r, key, "null", 4);
        return;
    }
    size_t mark = r->len;
    if (!log__key(r, key) || !log__quoted(r, value))
        r->len = mark;
}

void log_int(log_rec_t *r, const char *key, long long value)
{
    if (!r->on)
        return;
    char num[32];
    int n = snprintf(num, sizeof(num), "%lld", value);
    log__field(r, key, num, (size_t)n);
}

void log_double(log_rec_t *r, const char *key, double value)
{
    if (!r->on)
        return;
    /* JSON has no NaN or infinity. */
    if (!isfinite(value)) {
        log__field(r, key, "null", 4);
        return;
    }
    char num[48];
    int n = snprintf(num, sizeof(num), "%.3f", value);
    log__field(r, key, num, (size_t)n);
}

void log_bool(log_rec_t *r, const char *key, bool value)
{
    if (!r->on)
        return;
    log__field(r, key, value ? "true" : "false", value ? 4 : 5);
}

/* Writes n bytes whole (or until stderr refuses them). */
static void log__write(const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(STDERR_FILENO, p + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

/* The writer thread and its ring. Callers append whole lines at head under
 * the lock; the thread writes [tail, head) outside it and then advances
 * tail. head and tail count bytes since the start and never wrap; their
 * remainder by cap is the position in ring. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t has_lines; /* the thread waits for lines or stop */
    pthread_cond_t written;   /* callers wait for room, flush for tail */
    char *ring;
    size_t cap;
    uint64_t head, tail;
    int waiters; /* callers and flushes waiting on written */
    bool stop;
    pthread_t thread;
} log__w = {.mu = PTHREAD_MUTEX_INITIALIZER,
            .has_lines = PTHREAD_COND_INITIALIZER,
            .written = PTHREAD_COND_INITIALIZER};
/* Whether lines go to the ring: read without the lock on every line, set
 * and cleared under it. */
static atomic_bool log__ring_on;
/* How long the writer lets lines gather before it writes them. */
#define LOG_GATHER_NS 1000000

/* Waits, under the lock, for the writer to write more; the writer does not
 * let lines gather while someone waits. */
static void log__wait_written(void)
{
    log__w.waiters++;
    pthread_cond_signal(&log__w.has_lines);
    pthread_cond_wait(&log__w.written, &log__w.mu);
    log__w.waiters--;
}

static void *log__writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&log__w.mu);
    for (;;) {
        while (log__w.head == log__w.tail && !log__w.stop)
            pthread_cond_wait(&log__w.has_lines, &log__w.mu);
        if (log__w.head == log__w.tail)
            break; /* stopping, and nothing is left */
        /* Woken by the first line after a quiet spell: let the lines of the
         * next millisecond join it, so a busy server's lines go out in a few
         * large writes and its callers rarely wake this thread (only a line
         * into an empty ring does). Not when the ring is filling or
         * someone waits for it. */
        if (!log__w.stop && !log__w.waiters && log__w.head - log__w.tail < log__w.cap / 2) {
            pthread_mutex_unlock(&log__w.mu);
            nanosleep(&(struct timespec){.tv_nsec = LOG_GATHER_NS}, NULL);
            pthread_mutex_lock(&log__w.mu);
        }
        /* One write up to the end of the ring; the rest on the next turn. */
        size_t at = (size_t)(log__w.tail % log__w.cap);
        size_t n = (size_t)(log__w.head - log__w.tail);
        if (n > log__w.cap - at)
            n = log__w.cap - at;
        pthread_mutex_unlock(&log__w.mu);
        log__write(log__w.ring + at, n);
        pthread_mutex_lock(&log__w.mu);
        log__w.tail += n;
        pthread_cond_broadcast(&log__w.written);
    }
    /* Under the lock that saw the ring empty: a caller after this writes
     * its own line. */
    atomic_store(&log__ring_on, false);
    pthread_cond_broadcast(&log__w.written);
    pthread_mutex_unlock(&log__w.mu);
    return NULL;
}

int log_writer_start(size_t ring_bytes)
{
    size_t min = 2 * sizeof(((log_rec_t *)0)->buf);
    if (ring_bytes < min)
        ring_bytes = min;
    pthread_mutex_lock(&log__w.mu);
    if (atomic_load(&log__ring_on)) {
        pthread_mutex_unlock(&log__w.mu);
        return 0;
    }
    int rc = -1;
    log__w.ring = malloc(ring_bytes);
    if (log__w.ring) {
        log__w.cap = ring_bytes;
        log__w.head = log__w.tail = 0;
        log__w.stop = false;
        if (pthread_create(&log__w.thread, NULL, log__writer, NULL) == 0) {
            atomic_store(&log__ring_on, true);
            rc = 0;
        } else {
            free(log__w.ring);
            log__w.ring = NULL;
        }
    }
    pthread_mutex_unlock(&log__w.mu);
    return rc;
}

void log_flush(void)
{
    pthread_mutex_lock(&log__w.mu);
    uint64_t target = log__w.head;
    while (atomic_load(&log__ring_on) && log__w.tail < target)
        log__wait_written();
    pthread_mutex_unlock(&log__w.mu);
}

void log_writer_stop(void)
{
    pthread_mutex_lock(&log__w.mu);
    if (!atomic_load(&log__ring_on) || log__w.stop) {
        pthread_mutex_unlock(&log__w.mu);
        return;
    }
    log__w.stop = true;
    pthread_cond_signal(&log__w.has_lines);
    pthread_mutex_unlock(&log__w.mu);
    pthread_join(log__w.thread, NULL);
    pthread_mutex_lock(&log__w.mu);
    free(log__w.ring);
    log__w.ring = NULL;
    log__w.stop = false;
    pthread_mutex_unlock(&log__w.mu);
}

/* Hands the line to the ring; false when no writer runs (the caller writes
 * it). An error line waits for the lines before it and is written here, at
 * once, under the lock so nothing overtakes it. */
static bool log__to_ring(const log_rec_t *r)
{
    if (!atomic_load_explicit(&log__ring_on, memory_order_relaxed))
        return false;
    pthread_mutex_lock(&log__w.mu);
    if (r->level >= LOG_ERROR) {
        while (atomic_load(&log__ring_on) && log__w.tail < log__w.head)
            log__wait_written();
        log__write(r->buf, r->len);
        pthread_mutex_unlock(&log__w.mu);
        return true;
    }
    while (atomic_load(&log__ring_on) && log__w.cap - (size_t)(log__w.head - log__w.tail) < r->len)
        log__wait_written();
    if (!atomic_load(&log__ring_on)) {
        pthread_mutex_unlock(&log__w.mu);
        return false;
    }
    bool was_empty = log__w.head == log__w.tail;
    size_t at = (size_t)(log__w.head % log__w.cap);
    size_t first = r->len < log__w.cap - at ? r->len : log__w.cap - at;
    memcpy(log__w.ring + at, r->buf, first);
    memcpy(log__w.ring, r->buf + first, r->len - first);
    log__w.head += r->len;
    if (was_empty)
        pthread_cond_signal(&log__w.has_lines);
    pthread_mutex_unlock(&log__w.mu);
    return true;
}

void log_end(log_rec_t *r)
{
    if (!r->on)
        return;
    /* Appending always leaves room for these two bytes. */
    r->buf[r->len++] = '}';
    r->buf[r->len++] = '\n';
    if (!log__to_ring(r))
        log__write(r->buf, r->len);
}

void log_msg(log_level_t level, const char *event, const char *fmt, ...)
{
    log_rec_t r;
    log_begin(&r, level, event);
    if (!r.on)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_str(&r, "msg", msg);
    log_end(&r);
}
