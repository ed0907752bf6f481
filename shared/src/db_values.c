/* PostgreSQL values in and out (see onceiot/db.h): SQLSTATEs as the
 * runtime's error codes, columns of a result read by name, and array
 * literals written for $n::text[] / $n::bigint[] parameters. Nothing here
 * touches a connection; the pool and statements are db.c. */
#include "onceiot/db.h"

#include "onceiot/err.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int db_map_sqlstate(const char *s)
{
    if (s == NULL || strlen(s) != 5)
        return ERR_INTERNAL;
    if (strcmp(s, "23505") == 0)
        return ERR_ALREADY_EXISTS;
    if (strcmp(s, "23503") == 0)
        return ERR_FAILED_PRECONDITION;
    if (strcmp(s, "23514") == 0 || strcmp(s, "23502") == 0 || strncmp(s, "22", 2) == 0)
        return ERR_INVALID_ARGUMENT;
    if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0)
        return ERR_ABORTED;
    if (strcmp(s, "57014") == 0)
        return ERR_DEADLINE_EXCEEDED;
    if (strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 ||
        strcmp(s, "57P03") == 0)
        return ERR_UNAVAILABLE;
    return ERR_INTERNAL;
}

/* The column number of a named column; a missing column is a bug in the
 * caller's SQL or spelling, found on the first run, so it aborts. */
static int db__column(const PGresult *res, int row, const char *column)
{
    int col = PQfnumber(res, column);

    if (col < 0) {
        fprintf(stderr, "onceiot: db_get: no column \"%s\" in the result\n", column);
        abort();
    }
    if (row < 0 || row >= PQntuples(res)) {
        fprintf(stderr, "onceiot: db_get: row %d out of range (%d rows) reading \"%s\"\n", row,
                PQntuples(res), column);
        abort();
    }
    return col;
}

const char *db_get(const PGresult *res, int row, const char *column)
{
    int col = db__column(res, row, column);

    if (PQgetisnull(res, row, col))
        return NULL;
    return PQgetvalue(res, row, col);
}

int64_t db_get_int(const PGresult *res, int row, const char *column, int64_t if_null)
{
    const char *v = db_get(res, row, column);
    char *end;
    long long n;

    if (v == NULL)
        return if_null;
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0') {
        fprintf(stderr, "onceiot: db_get_int: column \"%s\" is not an integer: \"%s\"\n", column,
                v);
        abort();
    }
    return n;
}

bool db_get_bool(const PGresult *res, int row, const char *column)
{
    const char *v = db_get(res, row, column);

    return v != NULL && v[0] == 't';
}

const char *db_text_array(arena_t *a, const char *const *v, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += (v[i] ? 2 * strlen(v[i]) + 3 : 4) + 1;
    char *out = arena_alloc(a, cap), *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        if (!v[i]) {
            memcpy(p, "NULL", 4);
            p += 4;
            continue;
        }
        *p++ = '"';
        for (const char *s = v[i]; *s; s++) {
            if (*s == '"' || *s == '\\')
                *p++ = '\\';
            *p++ = *s;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = 0;
    return out;
}

/* ---- binary parameters (array_recv's format) ---- */

enum { DB__OID_BOOL = 16, DB__OID_INT8 = 20, DB__OID_TEXT = 25 };

static void db__be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The one-dimensional array header: dimensions, has-NULLs, element type,
 * length, lower bound 1 (an empty array has no dimension). Returns its
 * size. */
static size_t db__array_header(uint8_t *p, size_t n, bool nulls, uint32_t oid)
{
    db__be32(p, n > 0 ? 1 : 0);
    db__be32(p + 4, nulls ? 1 : 0);
    db__be32(p + 8, oid);
    if (n == 0)
        return 12;
    db__be32(p + 12, (uint32_t)n);
    db__be32(p + 16, 1);
    return 20;
}

db_value_t db_value_text(const char *s)
{
    return (db_value_t){.data = s, .len = 0, .binary = false};
}

db_value_t db_value_int8_array(arena_t *a, const int64_t *v, const bool *null, size_t n)
{
    bool nulls = false;
    for (size_t i = 0; null && i < n; i++)
        nulls |= null[i];
    uint8_t *buf = arena_alloc(a, 20 + n * 12);
    size_t at = db__array_header(buf, n, nulls, DB__OID_INT8);
    for (size_t i = 0; i < n; i++) {
        if (null && null[i]) {
            db__be32(buf + at, UINT32_MAX);
            at += 4;
            continue;
        }
        uint64_t x = (uint64_t)v[i];
        db__be32(buf + at, 8);
        db__be32(buf + at + 4, (uint32_t)(x >> 32));
        db__be32(buf + at + 8, (uint32_t)x);
        at += 12;
    }
    return (db_value_t){.data = (const char *)buf, .len = (int)at, .binary = true};
}

db_value_t db_value_bool_array(arena_t *a, const bool *v, size_t n)
{
    uint8_t *buf = arena_alloc(a, 20 + n * 5);
    size_t at = db__array_header(buf, n, false, DB__OID_BOOL);
    for (size_t i = 0; i < n; i++, at += 5) {
        db__be32(buf + at, 1);
        buf[at + 4] = v[i] ? 1 : 0;
    }
    return (db_value_t){.data = (const char *)buf, .len = (int)at, .binary = true};
}

db_value_t db_value_text_array(arena_t *a, const char *const *v, size_t n)
{
    size_t size = 20;
    bool nulls = false;
    for (size_t i = 0; i < n; i++) {
        size += 4 + (v[i] ? strlen(v[i]) : 0);
        nulls |= v[i] == NULL;
    }
    uint8_t *buf = arena_alloc(a, size);
    size_t at = db__array_header(buf, n, nulls, DB__OID_TEXT);
    for (size_t i = 0; i < n; i++) {
        if (v[i] == NULL) {
            db__be32(buf + at, UINT32_MAX);
            at += 4;
            continue;
        }
        size_t len = strlen(v[i]);
        db__be32(buf + at, (uint32_t)len);
        memcpy(buf + at + 4, v[i], len);
        at += 4 + len;
    }
    return (db_value_t){.data = (const char *)buf, .len = (int)at, .binary = true};
}
