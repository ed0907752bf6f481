/* The signed principal as a service receives it: any bytes as the packed
 * principal and its signature entry (MAC ‖ issuer), checked with a fixed
 * secret, and the same bytes unpacked directly. Input: one length byte
 * splitting signature from principal. */
#include "onceiot/principal.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t sig_len = data[0];
    if (sig_len > size - 1)
        sig_len = size - 1;
    const uint8_t *sig = data + 1;
    const uint8_t *bytes = sig + sig_len;
    size_t len = size - 1 - sig_len;
    principal_key_t secret;
    memset(secret.bytes, 7, sizeof(secret.bytes));
    arena_t *a = arena_new();
    principal_t *p = NULL;
    const char *why = NULL;
    int rc =
        principal_verify(&secret, bytes, len, sig, sig_len, "/onceiot.sims.v1.SimService/GetSim",
                         principal_now_ms(), a, &p, &why);
    if (rc == 0 && !p)
        __builtin_trap(); /* verified must mean unpacked */
    if (rc < 0 && !why)
        __builtin_trap(); /* every refusal says why */
    Onceiot__Common__V1__Principal *raw =
        onceiot__common__v1__principal__unpack(arena_allocator(a), len, bytes);
    (void)raw;
    arena_free(a);
    return 0;
}
