/* onceiot-keys: derives the principal keys of one process from a root
 * secret that only the deployer holds.
 *
 *   onceiot-keys ROOT_HEX NAME [CALLEE...]
 *
 * prints, one per line, the variables NAME needs:
 *   ONCEIOT_PRINCIPAL_KEY=<NAME's own secret>
 *   ONCEIOT_PRINCIPAL_SIGNING_KEYS=<callee>:<NAME's key for it>,...
 * The callees are those whose methods declare NAME among their callers in
 * the protos embedded here, every service for the gateway, and any named on
 * the command line. See shared/include/onceiot/principal.h for the scheme. */
#include "onceiot/authrule.h"
#include "onceiot/descset.h"
#include "onceiot/principal.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* The upstream name of "onceiot.<name>.v1.Service" into out; false if the
 * service is not one of ours. */
static bool keys__service(const char *service, char out[PRINCIPAL_ISSUER_MAX + 1])
{
    if (strncmp(service, "onceiot.", 8) != 0)
        return false;
    const char *name = service + 8, *dot = strchr(name, '.');
    if (!dot || dot == name || (size_t)(dot - name) > PRINCIPAL_ISSUER_MAX)
        return false;
    memcpy(out, name, (size_t)(dot - name));
    out[dot - name] = '\0';
    return true;
}

static void keys__add(char list[][PRINCIPAL_ISSUER_MAX + 1], size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(list[i], name) == 0)
            return;
    if (*n < PRINCIPAL_MAX_AUDIENCES)
        snprintf(list[(*n)++], PRINCIPAL_ISSUER_MAX + 1, "%s", name);
}

static void keys__hex(const principal_key_t *k, char out[65])
{
    sodium_bin2hex(out, 65, k->bytes, sizeof(k->bytes));
}

int main(int argc, char **argv)
{
    principal_key_t root;
    if (argc < 3 || sodium_init() < 0 || principal_key_parse(argv[1], &root) < 0 ||
        !principal_issuer_valid(argv[2], strlen(argv[2]))) {
        fprintf(stderr, "usage: onceiot-keys ROOT_HEX NAME [CALLEE...]\n"
                        "  ROOT_HEX: 64 hex digits only the deployer keeps\n");
        return 2;
    }
    const char *name = argv[2];
    char callees[PRINCIPAL_MAX_AUDIENCES][PRINCIPAL_ISSUER_MAX + 1];
    size_t n = 0;
    descset_t *ds = NULL;
    if (descset_load_embedded(&ds) < 0) {
        fprintf(stderr, "onceiot-keys: the embedded descriptor set does not parse\n");
        return 1;
    }
    for (size_t i = 0; i < descset_method_count(ds); i++) {
        const descset_method_t *m = descset_method_at(ds, i);
        char svc[PRINCIPAL_ISSUER_MAX + 1];
        auth_rule_t rule;
        if (!keys__service(m->service, svc) || !m->options ||
            auth_rule_from_options(m->options, m->options_len, &rule) != 1)
            continue;
        if (strcmp(name, "gateway") == 0 || auth_rule_allows_caller(&rule, name))
            keys__add(callees, &n, svc);
    }
    descset_free(ds);
    for (int i = 3; i < argc; i++) {
        if (!principal_issuer_valid(argv[i], strlen(argv[i]))) {
            fprintf(stderr, "onceiot-keys: \"%s\" is not a service name\n", argv[i]);
            return 2;
        }
        keys__add(callees, &n, argv[i]);
    }

    /* A service's own secret comes from the root; an issuer's key for a
     * callee comes from the callee's secret. */
    char label[PRINCIPAL_ISSUER_MAX + 8], hex[65];
    principal_key_t own, callee_secret, k;
    snprintf(label, sizeof(label), "root/%s", name);
    principal_key_derive(&root, label, &own);
    keys__hex(&own, hex);
    printf("ONCEIOT_PRINCIPAL_KEY=%s\nONCEIOT_PRINCIPAL_SIGNING_KEYS=", hex);
    for (size_t i = 0; i < n; i++) {
        snprintf(label, sizeof(label), "root/%s", callees[i]);
        principal_key_derive(&root, label, &callee_secret);
        principal_key_derive(&callee_secret, name, &k);
        keys__hex(&k, hex);
        printf("%s%s:%s", i ? "," : "", callees[i], hex);
    }
    printf("\n");
    sodium_memzero(&root, sizeof(root));
    sodium_memzero(&own, sizeof(own));
    sodium_memzero(&callee_secret, sizeof(callee_secret));
    sodium_memzero(&k, sizeof(k));
    return 0;
}
