/* Configuration values as an operator (or a broken manifest) sets them:
 * any text for a variable of each type (cfg_load), for the principal key
 * and for the signing-key list. Input: the first byte picks the variable. */
#include "onceiot/config.h"
#include "onceiot/mem.h"
#include "onceiot/principal.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *v = mem_alloc(size);
    memcpy(v, data + 1, size - 1);
    v[size - 1] = '\0';
    const char *s = NULL, *addr = NULL;
    long n = 0;
    bool b = false;
    const cfg_var_t vars[] = {
        {"FUZZ_STRING", CFG_STRING, "x", true, 0, 0, &s, NULL},
        {"FUZZ_INT", CFG_INT, "1", false, -5, 1000000, &n, NULL},
        {"FUZZ_BOOL", CFG_BOOL, "true", false, 0, 0, &b, NULL},
        {"FUZZ_ADDR", CFG_ADDR, "127.0.0.1:1", false, 0, 0, &addr, NULL},
    };
    char err[512];
    switch (data[0] % 6) {
    case 0:
    case 1:
    case 2:
    case 3: {
        const cfg_var_t *var = &vars[data[0] % 4];
        setenv(var->name, v, 1);
        int rc = cfg_load(var, 1, err, sizeof(err));
        if (rc < 0 && !strstr(err, var->name))
            __builtin_trap(); /* an error names its variable */
        if (rc == 0 && var->type == CFG_INT && (n < -5 || n > 1000000))
            __builtin_trap(); /* bounds hold */
        unsetenv(var->name);
        break;
    }
    case 4: {
        principal_key_t k;
        (void)principal_key_parse(v, &k);
        break;
    }
    default: {
        principal_signing_keys_t keys;
        if (principal_signing_keys_parse(v, &keys) == 0 && keys.n > PRINCIPAL_MAX_AUDIENCES)
            __builtin_trap();
        break;
    }
    }
    mem_free(v);
    return 0;
}
