/* See descset_fixture.h. */
#include "descset_fixture.h"

#include "onceiot/mem.h"

#include <criterion/criterion.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

extern char **environ;

static void dsf__run(char *const argv[])
{
    pid_t pid;
    int status = -1;
    cr_assert_eq(posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ), 0);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed", argv[0]);
}

/* Writes text to root/path, creating the folders on the way. */
static void dsf__write(const char *root, const char *path, const char *text)
{
    char *full = mem_printf("%s/%s", root, path);
    for (char *slash = strchr(full + strlen(root) + 1, '/'); slash;
         slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(full, 0700);
        *slash = '/';
    }
    FILE *f = fopen(full, "w");
    cr_assert_not_null(f, "cannot write %s", full);
    fputs(text, f);
    fclose(f);
    mem_free(full);
}

uint8_t *dsf_build(const dsf_file_t *extra, size_t n_extra, size_t *len)
{
    const char *src = getenv("ONCEIOT_SOURCE_DIR");
    cr_assert_not_null(src, "ONCEIOT_SOURCE_DIR is not set (run through ctest)");
    char tmp[] = "/tmp/onceiot-descset-XXXXXX";
    cr_assert_not_null(mkdtemp(tmp));
    for (size_t i = 0; i < n_extra; i++)
        dsf__write(tmp, extra[i].path, extra[i].text);

    char *inc_proto = mem_printf("-I%s/proto", src);
    char *inc_tests = mem_printf("-I%s/tests/proto", src);
    char *inc_tmp = mem_printf("-I%s", tmp);
    char *set = mem_printf("%s/set.pb", tmp);
    char *out = mem_printf("--descriptor_set_out=%s", set);
    char *argv[16 + 8] = {
        "protoc", inc_proto,           inc_tests, "-I/usr/share/grpc-proto", "-I/usr/include",
        inc_tmp,  "--include_imports", out,       "test/v1/test.proto"};
    size_t k = 9;
    for (size_t i = 0; i < n_extra && k < 16; i++)
        argv[k++] = (char *)extra[i].path;
    argv[k++] = "grpc/health/v1/health.proto";
    argv[k++] = "grpc/reflection/v1/reflection.proto";
    argv[k++] = "grpc/reflection/v1alpha/reflection.proto";
    argv[k] = NULL;
    dsf__run(argv);

    FILE *f = fopen(set, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    uint8_t *bytes = mem_alloc(*len);
    cr_assert_eq(fread(bytes, 1, *len, f), *len);
    fclose(f);

    char *rm[] = {"rm", "-rf", tmp, NULL};
    dsf__run(rm);
    mem_free(inc_proto);
    mem_free(inc_tests);
    mem_free(inc_tmp);
    mem_free(set);
    mem_free(out);
    return bytes;
}
