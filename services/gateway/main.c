/* onceiot-gateway: the one authenticated entry that routes every call to its service.
 *
 * Its methods arrive with their own issue; until then the binary serves
 * health and reflection. It owns no tables. */
#include "onceiot/svc.h"

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "gateway",
        .default_listen = "127.0.0.1:50051",
        .uses_db = false,
    };
    return svc_main(argc, argv, &def);
}
