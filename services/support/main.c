/* onceiot-support: support tickets.
 *
 * Its methods arrive with their own issue; until then the binary serves
 * health and reflection, and applies its (empty) schema. */
#include "onceiot/svc.h"

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "support",
        .default_listen = "127.0.0.1:50065",
        .uses_db = true,
    };
    return svc_main(argc, argv, &def);
}
