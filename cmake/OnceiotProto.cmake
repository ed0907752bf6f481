# Code generation from .proto files: protobuf-c sources for messages, and a
# descriptor set embedded into each binary for reflection and method metadata.

# onceiot_protoc_c(<out-var> <proto>...)
# Generates <proto>.pb-c.{c,h} under ${ONCEIOT_GEN_DIR} for each proto (a path
# relative to one of ${ONCEIOT_PROTO_PATH}) and appends the .c files to <out-var>.
function(onceiot_protoc_c out)
  set(srcs)
  set(incs)
  foreach(p ${ONCEIOT_PROTO_PATH})
    list(APPEND incs -I${p})
  endforeach()
  foreach(proto ${ARGN})
    string(REGEX REPLACE "\\.proto$" "" base ${proto})
    set(c ${ONCEIOT_GEN_DIR}/${base}.pb-c.c)
    set(h ${ONCEIOT_GEN_DIR}/${base}.pb-c.h)
    onceiot__find_proto(${proto} abs)
    add_custom_command(
      OUTPUT ${c} ${h}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${ONCEIOT_GEN_DIR}
      COMMAND ${PROTOC_C} ${incs} --c_out=${ONCEIOT_GEN_DIR} ${proto}
      DEPENDS ${abs}
      COMMENT "protoc-c ${proto}"
      VERBATIM)
    list(APPEND srcs ${c})
  endforeach()
  set(${out} ${${out}} ${srcs} PARENT_SCOPE)
endfunction()

function(onceiot__find_proto proto out)
  foreach(p ${ONCEIOT_PROTO_PATH})
    if(EXISTS ${p}/${proto})
      set(${out} ${p}/${proto} PARENT_SCOPE)
      return()
    endif()
  endforeach()
  message(FATAL_ERROR "proto ${proto} not found in ${ONCEIOT_PROTO_PATH}")
endfunction()

# onceiot_embed_descset(<target> <proto>...)
# Builds a FileDescriptorSet of the given protos with all transitive imports and
# links it into <target> as the symbols descset_embedded/descset_embedded_end
# (declared in onceiot/descset.h). The runtime always serves health and
# reflection, so their protos are added here.
function(onceiot_embed_descset target)
  set(protos ${ARGN} grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto
             grpc/reflection/v1alpha/reflection.proto)
  set(incs)
  set(deps)
  foreach(p ${ONCEIOT_PROTO_PATH})
    list(APPEND incs -I${p})
  endforeach()
  foreach(proto ${protos})
    onceiot__find_proto(${proto} abs)
    list(APPEND deps ${abs})
  endforeach()
  set(pb ${CMAKE_CURRENT_BINARY_DIR}/${target}.descset)
  set(asm ${CMAKE_CURRENT_BINARY_DIR}/${target}_descset.S)
  add_custom_command(
    OUTPUT ${pb}
    COMMAND ${PROTOC} ${incs} --include_imports --descriptor_set_out=${pb} ${protos}
    DEPENDS ${deps}
    COMMENT "descriptor set for ${target}"
    VERBATIM)
  file(WRITE ${asm}
    "    .section .rodata\n"
    "    .balign 16\n"
    "    .global descset_embedded\n"
    "descset_embedded:\n"
    "    .incbin \"${pb}\"\n"
    "    .global descset_embedded_end\n"
    "descset_embedded_end:\n"
    "    .byte 0\n"
    "    .section .note.GNU-stack,\"\",@progbits\n")
  set_source_files_properties(${asm} PROPERTIES OBJECT_DEPENDS ${pb})
  target_sources(${target} PRIVATE ${asm})
endfunction()
