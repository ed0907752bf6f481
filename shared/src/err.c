/* Names, messages and gRPC mappings of the error table in err.h. */
#include "onceiot/err.h"

#include <stddef.h>

typedef struct err_info {
    const char *name;
    grpc_status_code status;
    const char *message;
} err_info_t;

static const err_info_t err__table[] = {
#define ERR__ROW(n, s, m) {#n, s, m},
    ERR_MAP(ERR__ROW)
#undef ERR__ROW
};

static const err_info_t *err__find(int err)
{
    if (err <= ERR__BASE || err >= ERR__END)
        return NULL;
    return &err__table[err - ERR__BASE - 1];
}

const char *err_name(int err)
{
    if (err == 0)
        return "OK";
    const err_info_t *e = err__find(err);
    return e ? e->name : "?";
}

const char *err_message(int err)
{
    if (err == 0)
        return "ok";
    const err_info_t *e = err__find(err);
    return e ? e->message : "unknown error";
}

grpc_status_code err_to_grpc(int err)
{
    if (err == 0)
        return GRPC_STATUS_OK;
    const err_info_t *e = err__find(err);
    return e ? e->status : GRPC_STATUS_UNKNOWN;
}

int err_from_grpc(grpc_status_code code)
{
    if (code == GRPC_STATUS_OK)
        return 0;
    /* The first row with this status is its canonical code; CONFIG and IO
     * come after INTERNAL in the table so INTERNAL maps back to itself. */
    for (size_t i = 0; i < sizeof(err__table) / sizeof(err__table[0]); i++)
        if (err__table[i].status == code)
            return ERR__BASE + 1 + (int)i;
    return ERR_UNKNOWN;
}

const char *err_grpc_name(grpc_status_code code)
{
    /* The table names each canonical code exactly as gRPC does, and
     * err_from_grpc finds that row; anything else is UNKNOWN. */
    return err_name(err_from_grpc(code));
}
