/* Kept apart from descset.c so that a program without an embedded descriptor
 * set (the unit tests) can link the runtime library without defining
 * descset_embedded: the linker pulls this object in only when a program calls
 * descset_load_embedded. */
#include "onceiot/descset.h"

int descset_load_embedded(descset_t **out)
{
    return descset_load(descset_embedded, (size_t)(descset_embedded_end - descset_embedded), out);
}
