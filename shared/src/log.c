/* JSON-lines logging to stderr, one write(2) per line. */
#include "onceiot/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log__service = "onceiot";
static log_level_t log__min = LOG_INFO;
static const char *const log__names[] = {"debug", "info", "warn", "error"};

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

bool log_enabled(log_level_t level)
{
    return level >= log__min;
}

/* Appends raw bytes, keeping room for the closing "}\n". */
static void log__raw(log_rec_t *r, const char *s, size_t n)
{
    size_t room = sizeof(r->buf) - 3 - r->len;
    if (n > room)
        n = room;
    memcpy(r->buf + r->len, s, n);
    r->len += n;
}

static void log__quoted(log_rec_t *r, const char *s)
{
    log__raw(r, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"':
            log__raw(r, "\\\"", 2);
            break;
        case '\\':
            log__raw(r, "\\\\", 2);
            break;
        case '\n':
            log__raw(r, "\\n", 2);
            break;
        case '\r':
            log__raw(r, "\\r", 2);
            break;
        case '\t':
            log__raw(r, "\\t", 2);
            break;
        default:
            if (*p < 0x20) {
                int n = snprintf(esc, sizeof(esc), "\\u%04x", *p);
                log__raw(r, esc, (size_t)n);
            } else {
                log__raw(r, (const char *)p, 1);
            }
        }
    }
    log__raw(r, "\"", 1);
}

static void log__key(log_rec_t *r, const char *key)
{
    log__raw(r, ",", 1);
    log__quoted(r, key);
    log__raw(r, ":", 1);
}

void log_begin(log_rec_t *r, log_level_t level, const char *event)
{
    r->len = 0;
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
}

void log_str(log_rec_t *r, const char *key, const char *value)
{
    if (!r->on)
        return;
    log__key(r, key);
    if (value)
        log__quoted(r, value);
    else
        log__raw(r, "null", 4);
}

void log_int(log_rec_t *r, const char *key, long long value)
{
    if (!r->on)
        return;
    char num[32];
    int n = snprintf(num, sizeof(num), "%lld", value);
    log__key(r, key);
    log__raw(r, num, (size_t)n);
}

void log_double(log_rec_t *r, const char *key, double value)
{
    if (!r->on)
        return;
    char num[48];
    int n = snprintf(num, sizeof(num), "%.3f", value);
    log__key(r, key);
    log__raw(r, num, (size_t)n);
}

void log_bool(log_rec_t *r, const char *key, bool value)
{
    if (!r->on)
        return;
    log__key(r, key);
    log__raw(r, value ? "true" : "false", value ? 4 : 5);
}

void log_end(log_rec_t *r)
{
    if (!r->on)
        return;
    /* log__raw always leaves room for these two bytes. */
    r->buf[r->len++] = '}';
    r->buf[r->len++] = '\n';
    ssize_t off = 0;
    while (off < (ssize_t)r->len) {
        ssize_t w = write(STDERR_FILENO, r->buf + off, r->len - (size_t)off);
        if (w <= 0)
            break;
        off += w;
    }
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
