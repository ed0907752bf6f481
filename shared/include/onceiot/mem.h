/* Heap and per-call memory.
 *
 * All heap use in onceiot goes through mem_*: allocation failure aborts the
 * process (a server that cannot allocate cannot answer honestly either), so
 * callers never check for NULL. jemalloc sits underneath in normal builds.
 *
 * An arena collects many small allocations that die together, like those of
 * one call: it is handed to protobuf-c as its allocator, and freed at once when
 * the call ends. Arenas are not thread-safe; one call uses one at a time. */
#ifndef ONCEIOT_MEM_H
#define ONCEIOT_MEM_H

#include <protobuf-c/protobuf-c.h>
#include <stdarg.h>
#include <stddef.h>

void *mem_alloc(size_t n);
void *mem_calloc(size_t count, size_t size);
void *mem_realloc(void *p, size_t n);
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);
/* Returns a newly allocated, formatted string. */
char *mem_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mem_free(void *p);

typedef struct arena arena_t;

arena_t *arena_new(void);
/* Frees every allocation of the arena and the arena itself. NULL is allowed. */
void arena_free(arena_t *a);
/* Returns n bytes aligned for any type; never NULL. The memory lives until
 * arena_free. */
void *arena_alloc(arena_t *a, size_t n);
void *arena_calloc(arena_t *a, size_t count, size_t size);
char *arena_strdup(arena_t *a, const char *s);
char *arena_strndup(arena_t *a, const char *s, size_t n);
char *arena_printf(arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *arena_vprintf(arena_t *a, const char *fmt, va_list ap);
/* A protobuf-c allocator that allocates from the arena; its free is a no-op.
 * The pointer is valid as long as the arena. */
ProtobufCAllocator *arena_allocator(arena_t *a);
/* Bytes handed out so far (for tests and limits). */
size_t arena_used(const arena_t *a);

#endif
