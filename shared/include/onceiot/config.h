/* Configuration from environment variables.
 *
 * A binary declares a table of variables (name, type, default, bounds, where
 * to store the value); cfg_load reads them all at start and fails with a
 * message naming the first bad variable. Nothing else in the program reads
 * the environment. */
#ifndef ONCEIOT_CONFIG_H
#define ONCEIOT_CONFIG_H

#include "onceiot/err.h"
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    CFG_STRING, /* dst: const char ** (points into the environment or def) */
    CFG_INT,    /* dst: long *; bounded by min..max */
    CFG_BOOL,   /* dst: bool *; accepts 1/0, true/false, yes/no, on/off */
    CFG_ADDR,   /* dst: const char **; host:port with a port in 0..65535 */
} cfg_type_t;

typedef struct cfg_var {
    const char *name; /* environment variable, e.g. "ONCEIOT_LISTEN" */
    cfg_type_t type;
    const char *def;  /* default as text; NULL means required (or unset for strings) */
    bool required;    /* unset or empty is an error */
    long min, max;    /* bounds for CFG_INT */
    void *dst;        /* where the parsed value goes */
    const char *help; /* one line for the README table and error messages */
} cfg_var_t;

/* Loads every variable of the table. On error returns ERR_CONFIG and writes a
 * message such as "ONCEIOT_DB_POOL_SIZE: must be an integer between 1 and 256
 * (got \"zero\")" to err. Values already stored may be partially set. */
int cfg_load(const cfg_var_t *vars, size_t n, char *err, size_t errlen) ONCEIOT_MUSTCHECK;

#endif
