/* A descriptor set built here by protoc, the way onceiot_embed_descset
 * builds a binary's: the test service, health and both reflection protos,
 * plus extra protos a test writes (each as a path under the include root and
 * its text). */
#ifndef ONCEIOT_TEST_DESCSET_FIXTURE_H
#define ONCEIOT_TEST_DESCSET_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

typedef struct dsf_file {
    const char *path; /* "opt/v1/opt.proto" */
    const char *text;
} dsf_file_t;

/* Writes the extra files to a temporary include root, runs protoc
 * --include_imports over everything, removes the temporary files and
 * returns the set's bytes (mem_free them). Fails the test on any error. */
uint8_t *dsf_build(const dsf_file_t *extra, size_t n_extra, size_t *len);

#endif
