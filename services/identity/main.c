/* onceiot-identity: users, API keys, login tokens and authentication.
 *
 * Its methods arrive with their own issue; until then the binary serves
 * health and reflection, and applies its (empty) schema. */
#include "onceiot/svc.h"

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "identity",
        .default_listen = "127.0.0.1:50061",
        .uses_db = true,
    };
    return svc_main(argc, argv, &def);
}
