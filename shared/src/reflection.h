/* gRPC server reflection (grpc.reflection.v1 and v1alpha), answered from the
 * server's descriptor set. Private to the runtime: server.c registers both
 * services on every server. */
#ifndef ONCEIOT_REFLECTION_H
#define ONCEIOT_REFLECTION_H

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "onceiot/descset.h"
#include "onceiot/mem.h"
#include "onceiot/rpc.h"

/* Handler tables for grpc.reflection.v1.ServerReflection and
 * grpc.reflection.v1alpha.ServerReflection; ctx (rpc_call_ctx) is the server's
 * const descset_t *. */
extern const rpc_service_impl_t reflection_v1_service;
extern const rpc_service_impl_t reflection_v1alpha_service;

/* Answers one reflection request from the descriptor set. Everything in *out
 * is allocated from the arena or points into ds and req, so it lives as long
 * as the shortest of the three. A request that names nothing known still gets
 * a response (an error_response), never a failure. Returns 0. */
int reflection__answer(const descset_t *ds,
                       const Grpc__Reflection__V1__ServerReflectionRequest *req, arena_t *a,
                       Grpc__Reflection__V1__ServerReflectionResponse **out) ONCEIOT_MUSTCHECK;

#endif
