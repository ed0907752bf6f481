/* cfg_load over a table of variables: defaults, required variables, integer
 * bounds, boolean spellings and addresses, with errors that name the
 * variable. Each test runs in its own process, so setenv/unsetenv stay local. */
#include "onceiot/config.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct values {
    const char *listen;
    const char *url;
    long pool;
    bool migrate;
    const char *note;
} values_t;

static values_t v;
static char err[256];

/* The table a typical binary declares. */
static const cfg_var_t vars[] = {
    {"T_LISTEN", CFG_ADDR, "127.0.0.1:50061", true, 0, 0, &v.listen, "address to listen on"},
    {"T_URL", CFG_STRING, NULL, true, 0, 0, &v.url, "PostgreSQL connection URL"},
    {"T_POOL", CFG_INT, "8", false, 1, 256, &v.pool, NULL},
    {"T_MIGRATE", CFG_BOOL, "true", false, 0, 0, &v.migrate, NULL},
    {"T_NOTE", CFG_STRING, NULL, false, 0, 0, &v.note, NULL},
};
enum { N_VARS = sizeof(vars) / sizeof(vars[0]) };

static void setup(void)
{
    for (size_t i = 0; i < N_VARS; i++)
        unsetenv(vars[i].name);
    setenv("T_URL", "postgresql://x@127.0.0.1/db", 1);
    memset(&v, 0, sizeof(v));
    v.note = "untouched";
    err[0] = '\0';
}

TestSuite(config, .init = setup);

static int load(void)
{
    return cfg_load(vars, N_VARS, err, sizeof(err));
}

Test(config, defaults_are_used_when_unset)
{
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_str_eq(v.listen, "127.0.0.1:50061");
    cr_assert_str_eq(v.url, "postgresql://x@127.0.0.1/db");
    cr_assert_eq(v.pool, 8);
    cr_assert_eq(v.migrate, true);
    cr_assert_null(v.note, "an optional string without a default is NULL");
}

Test(config, an_empty_value_counts_as_unset)
{
    setenv("T_POOL", "", 1);
    setenv("T_NOTE", "", 1);
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(v.pool, 8);
    cr_assert_null(v.note);
}

Test(config, set_values_override_defaults)
{
    setenv("T_LISTEN", "0.0.0.0:9000", 1);
    setenv("T_POOL", "256", 1);
    setenv("T_MIGRATE", "off", 1);
    setenv("T_NOTE", "hello", 1);
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_str_eq(v.listen, "0.0.0.0:9000");
    cr_assert_eq(v.pool, 256);
    cr_assert_eq(v.migrate, false);
    cr_assert_str_eq(v.note, "hello");
}

Test(config, a_missing_required_variable_is_named)
{
    unsetenv("T_URL");
    cr_assert_eq(load(), ERR_CONFIG);
    cr_assert(strstr(err, "T_URL"), "%s", err);
    cr_assert(strstr(err, "required"), "%s", err);
    cr_assert(strstr(err, "PostgreSQL connection URL"), "the help line is quoted: %s", err);
}

Test(config, an_empty_required_variable_is_missing)
{
    setenv("T_URL", "", 1);
    cr_assert_eq(load(), ERR_CONFIG);
    cr_assert(strncmp(err, "T_URL:", 6) == 0, "%s", err);
}

Test(config, the_first_bad_variable_is_reported)
{
    setenv("T_POOL", "0", 1);
    setenv("T_MIGRATE", "maybe", 1);
    cr_assert_eq(load(), ERR_CONFIG);
    cr_assert(strncmp(err, "T_POOL:", 7) == 0, "%s", err);
}

Test(config, a_small_error_buffer_is_truncated_not_overrun)
{
    char small[8];
    memset(small, 'x', sizeof(small));
    unsetenv("T_URL");
    cr_assert_eq(cfg_load(vars, N_VARS, small, sizeof(small)), ERR_CONFIG);
    cr_assert_eq(strlen(small), sizeof(small) - 1);
    cr_assert_str_eq(small, "T_URL: ");
}

/* Bad integers: each message names the variable, the bounds and the value.
 * Strings are held as arrays: parameters are copied into the test process. */
typedef struct text {
    char s[32];
} text_t;

ParameterizedTestParameters(config, bad_integers_name_the_variable_bounds_and_value)
{
    static text_t cases[] = {
        {"0"},  {"257"}, {"-1"},  {"zero"}, {"8x"},
        {"8 "}, {" 8x"}, {"1.5"}, {"0x8"},  {"99999999999999999999999"},
    };
    return cr_make_param_array(text_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(text_t *t, config, bad_integers_name_the_variable_bounds_and_value)
{
    setenv("T_POOL", t->s, 1);
    cr_assert_eq(load(), ERR_CONFIG, "\"%s\" was accepted as %ld", t->s, v.pool);
    cr_assert(strncmp(err, "T_POOL:", 7) == 0, "%s", err);
    cr_assert(strstr(err, "between 1 and 256"), "%s", err);
    char got[64];
    snprintf(got, sizeof(got), "(got \"%s\")", t->s);
    cr_assert(strstr(err, got), "%s lacks %s", err, got);
}

Test(config, integer_bounds_are_inclusive)
{
    setenv("T_POOL", "1", 1);
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(v.pool, 1);
    setenv("T_POOL", "256", 1);
    cr_assert_eq(load(), 0, "%s", err);
    cr_assert_eq(v.pool, 256);
}

typedef struct spelling {
    char s[8];
    bool value;
} spelling_t;

ParameterizedTestParameters(config, every_bool_spelling_is_accepted)
{
    static spelling_t cases[] = {
        {"true", true}, {"TRUE", true}, {"True", true}, {"1", true},      {"yes", true},
        {"YES", true},  {"on", true},   {"On", true},   {"false", false}, {"FALSE", false},
        {"0", false},   {"no", false},  {"No", false},  {"off", false},   {"OFF", false},
    };
    return cr_make_param_array(spelling_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(spelling_t *t, config, every_bool_spelling_is_accepted)
{
    setenv("T_MIGRATE", t->s, 1);
    v.migrate = !t->value;
    cr_assert_eq(load(), 0, "%s: %s", t->s, err);
    cr_assert_eq(v.migrate, t->value, "\"%s\"", t->s);
}

ParameterizedTestParameters(config, a_bad_bool_is_named)
{
    static text_t cases[] = {{"maybe"}, {"2"}, {"yess"}, {"t"}, {"onn"}, {"true "}};
    return cr_make_param_array(text_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(text_t *t, config, a_bad_bool_is_named)
{
    setenv("T_MIGRATE", t->s, 1);
    cr_assert_eq(load(), ERR_CONFIG, "\"%s\" was accepted", t->s);
    cr_assert(strncmp(err, "T_MIGRATE:", 10) == 0, "%s", err);
    char got[64];
    snprintf(got, sizeof(got), "(got \"%s\")", t->s);
    cr_assert(strstr(err, got), "%s", err);
}

ParameterizedTestParameters(config, good_addresses_are_kept_verbatim)
{
    static text_t cases[] = {
        {"127.0.0.1:50051"}, {"localhost:1"}, {"[::1]:50051"}, {"0.0.0.0:0"},
        {"sims:65535"},      {"dns:///x:1"},  {"unix:/tmp/s"},
    };
    return cr_make_param_array(text_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(text_t *t, config, good_addresses_are_kept_verbatim)
{
    setenv("T_LISTEN", t->s, 1);
    cr_assert_eq(load(), 0, "%s: %s", t->s, err);
    cr_assert_str_eq(v.listen, t->s);
}

ParameterizedTestParameters(config, bad_addresses_are_named)
{
    static text_t cases[] = {
        {"localhost"},  /* no colon */
        {"localhost:"}, /* missing port */
        {":50051"},     /* missing host */
        {"host:70000"}, /* port out of range */
        {"host:-1"},    /* negative port */
        {"host:http"},  /* not a number */
        {"host:80x"},   /* trailing junk */
        {"[::1]"},      /* IPv6 without a port */
    };
    return cr_make_param_array(text_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(text_t *t, config, bad_addresses_are_named)
{
    setenv("T_LISTEN", t->s, 1);
    cr_assert_eq(load(), ERR_CONFIG, "\"%s\" was accepted", t->s);
    cr_assert(strncmp(err, "T_LISTEN:", 9) == 0, "%s", err);
    cr_assert(strstr(err, "host:port"), "%s", err);
    char got[64];
    snprintf(got, sizeof(got), "(got \"%s\")", t->s);
    cr_assert(strstr(err, got), "%s", err);
}

Test(config, an_out_of_range_port_names_the_range)
{
    setenv("T_LISTEN", "127.0.0.1:70000", 1);
    cr_assert_eq(load(), ERR_CONFIG);
    cr_assert(strstr(err, "between 0 and 65535"), "%s", err);
}
