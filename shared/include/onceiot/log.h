/* Structured logging: one JSON object per line on stderr.
 *
 * A record is built on the stack and goes out whole, so lines from concurrent
 * threads never interleave: written with a single write(2) by the caller, or,
 * once log_writer_start has run, copied into a ring that a writer thread
 * empties in large writes, off the call path. A full ring makes the caller
 * wait (no line is lost); an error line is written by its caller at once,
 * after every line before it. Every line has "ts", "level",
 * "service" and "event", and "trace_id" while the thread works on a call
 * (log_set_trace_id); callers add typed fields. */
#ifndef ONCEIOT_LOG_H
#define ONCEIOT_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level_t;

/* Sets the service name put on every line and the minimum level written. */
void log_init(const char *service, log_level_t min_level);
/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int log_level_parse(const char *s);
bool log_enabled(log_level_t level);
/* Puts "trace_id" on every line this thread begins from now on (NULL or ""
 * for none) and returns the previous one, for the caller to put back. The
 * runtime sets it around a handler and for a call's access line. The string
 * must live until it is replaced. */
const char *log_set_trace_id(const char *trace_id);

typedef struct log_rec {
    char buf[4096]; /* the line being built; long values are truncated */
    size_t len;     /* bytes used in buf */
    bool on;        /* false when the level is filtered out */
    log_level_t level;
} log_rec_t;

void log_begin(log_rec_t *r, log_level_t level, const char *event);
void log_str(log_rec_t *r, const char *key, const char *value); /* NULL value -> null */
void log_int(log_rec_t *r, const char *key, long long value);
void log_double(log_rec_t *r, const char *key, double value);
void log_bool(log_rec_t *r, const char *key, bool value);
/* Terminates the line and writes it. */
void log_end(log_rec_t *r);

/* Starts the writer thread with a ring of ring_bytes (at least two of the
 * longest lines). Returns 0, or -1 when no thread could start (lines are
 * then written by their callers, as before). */
int log_writer_start(size_t ring_bytes);
/* Returns once every line handed over so far is written. */
void log_flush(void);
/* Writes what is left and stops the thread; lines after it are written by
 * their callers. Safe to call when no writer runs. */
void log_writer_stop(void);

/* A one-field convenience: {"event": event, "msg": <formatted>}. */
void log_msg(log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
