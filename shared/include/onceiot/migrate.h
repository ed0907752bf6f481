/* Schema migrations: ordered SQL files NNNN_name.sql in one directory per
 * service, applied inside that service's schema.
 *
 * Each pending file runs in its own transaction with search_path set to the
 * schema and is recorded in <schema>.schema_migrations (version, name,
 * checksum, applied_at). A session advisory lock keyed on the schema makes
 * concurrent starts of several replicas safe: one applies, the others wait and
 * then find nothing to do. A file whose checksum differs from the one recorded
 * when it was applied is refused (ERR_FAILED_PRECONDITION) and nothing is
 * applied; so is a recorded version whose file has disappeared. */
#ifndef ONCEIOT_MIGRATE_H
#define ONCEIOT_MIGRATE_H

#include "onceiot/err.h"
#include <stddef.h>

typedef struct migrate_result {
    int applied; /* files applied by this run */
    int total;   /* files in the directory, plus runtime migrations */
} migrate_result_t;

/* Applies the pending migrations of dir to schema over a connection of its
 * own. On error returns a negative ERR_* code and writes a message naming the
 * file to err. */
/* A migration the runtime itself owns (e.g. the outbox table), applied in
 * every schema of a service that uses the module, before the service's own
 * files, and recorded by name in <schema>.runtime_migrations. Its SQL is
 * never edited once released (the checksum is checked like a file's); a
 * change is a new entry. */
typedef struct migrate_embedded {
    const char *name; /* unique across the runtime, e.g. "outbox_0001_table" */
    const char *sql;
} migrate_embedded_t;

/* migrate_run with the runtime's migrations (n_runtime of them) first. */
int migrate_run_with(const char *db_url, const char *schema, const migrate_embedded_t *runtime,
                     size_t n_runtime, const char *dir, migrate_result_t *result, char *err,
                     size_t errlen) ONCEIOT_MUSTCHECK;

int migrate_run(const char *db_url, const char *schema, const char *dir, migrate_result_t *result,
                char *err, size_t errlen) ONCEIOT_MUSTCHECK;

#endif
