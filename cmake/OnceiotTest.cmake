# What every test that runs our binaries gets (the tests in other languages
# too): where the trees are, how the sanitizers report, and the reports that
# fail it.
set(ONCEIOT_TEST_ENV
    "ONCEIOT_BUILD_DIR=${CMAKE_BINARY_DIR};ONCEIOT_SOURCE_DIR=${CMAKE_SOURCE_DIR};ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1;LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tests/lsan.supp")
set(ONCEIOT_TEST_FAIL_REGEX
    "ERROR: AddressSanitizer;ERROR: LeakSanitizer;runtime error:;WARNING: ThreadSanitizer")

# onceiot_add_test(<name> SOURCES <src>... [LIBS <lib>...] [LABELS <label>...] [TIMEOUT <s>])
# One Criterion executable per tested module, registered with CTest. The test
# also fails when a sanitizer reports anything, even if Criterion passed. Tests
# share one PostgreSQL cluster (some stop and start it), so ctest -j never runs
# two of them at once.
function(onceiot_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE onceiot_testsupport ${T_LIBS})
  add_test(NAME ${name} COMMAND ${name} --jobs=1 --verbose=0)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES
    TIMEOUT ${T_TIMEOUT}
    LABELS "${T_LABELS}"
    RESOURCE_LOCK postgres
    FAIL_REGULAR_EXPRESSION "${ONCEIOT_TEST_FAIL_REGEX}"
    ENVIRONMENT "${ONCEIOT_TEST_ENV}")
endfunction()
