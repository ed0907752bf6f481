/* Environment configuration: parse and validate a table of variables. */
#include "onceiot/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int cfg__fail(char *err, size_t errlen, const cfg_var_t *v, const char *why, const char *got)
{
    if (got)
        snprintf(err, errlen, "%s: %s (got \"%s\")", v->name, why, got);
    else
        snprintf(err, errlen, "%s: %s", v->name, why);
    return ERR_CONFIG;
}

static int cfg__int(const cfg_var_t *v, const char *s, char *err, size_t errlen)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || n < v->min || n > v->max) {
        char why[128];
        snprintf(why, sizeof(why), "must be an integer between %ld and %ld", v->min, v->max);
        return cfg__fail(err, errlen, v, why, s);
    }
    *(long *)v->dst = n;
    return 0;
}

static int cfg__bool(const cfg_var_t *v, const char *s, char *err, size_t errlen)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *(bool *)v->dst = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *(bool *)v->dst = false;
            return 0;
        }
    }
    return cfg__fail(err, errlen, v, "must be true or false", s);
}

/* host:port, [v6]:port or a dns:/// / unix: target; the port must be a number
 * in 0..65535 when one is given after the last colon of a host:port. */
static int cfg__addr(const cfg_var_t *v, const char *s, char *err, size_t errlen)
{
    if (strncmp(s, "unix:", 5) == 0 || strncmp(s, "dns:", 4) == 0) {
        *(const char **)v->dst = s;
        return 0;
    }
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || colon[1] == '\0')
        return cfg__fail(err, errlen, v, "must be host:port", s);
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || port < 0 || port > 65535)
        return cfg__fail(err, errlen, v, "must be host:port with a port between 0 and 65535", s);
    *(const char **)v->dst = s;
    return 0;
}

int cfg_load(const cfg_var_t *vars, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const cfg_var_t *v = &vars[i];
        const char *s = getenv(v->name);
        if (!s || !*s)
            s = v->def;
        if (!s || !*s) {
            if (v->required) {
                snprintf(err, errlen, "%s: is required (%s)", v->name, v->help ? v->help : "");
                return ERR_CONFIG;
            }
            if (v->type == CFG_STRING || v->type == CFG_ADDR)
                *(const char **)v->dst = NULL;
            continue;
        }
        int rc = 0;
        switch (v->type) {
        case CFG_STRING:
            *(const char **)v->dst = s;
            break;
        case CFG_INT:
            rc = cfg__int(v, s, err, errlen);
            break;
        case CFG_BOOL:
            rc = cfg__bool(v, s, err, errlen);
            break;
        case CFG_ADDR:
            rc = cfg__addr(v, s, err, errlen);
            break;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}
