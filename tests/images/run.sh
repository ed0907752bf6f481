#!/usr/bin/env bash
# The identity image, built by tools/images from this build tree, runs
# read-only as user 10001 with every capability dropped and no new
# privileges (runc under podman, a private store) and reaches SERVING on a
# loopback port against the test PostgreSQL, applying the migrations it
# carries at /usr/share/onceiot/schema/identity. identity because it is the
# one every other process needs and it uses all of the runtime (database,
# migrations, keys); one image keeps the test at seconds. Fails (never
# skips) when buildah, podman or runc cannot work here.
#
# usage: run.sh BUILD_DIR SOURCE_DIR   (needs ONCEIOT_TEST_PG_URL)
set -Eeuo pipefail
trap 'echo "FAIL: line $LINENO: \"$BASH_COMMAND\" failed with status $?"' ERR

build=${1:?usage: run.sh BUILD_DIR SOURCE_DIR}
src=${2:?usage: run.sh BUILD_DIR SOURCE_DIR}
url=${ONCEIOT_TEST_PG_URL:?ONCEIOT_TEST_PG_URL is not set; run tests via ./tools/stack test}
psql=${ONCEIOT_TEST_PGBIN:-/usr/lib/postgresql/15/bin}/psql
for t in buildah podman runc; do
    command -v $t >/dev/null || { echo "FAIL: $t is not installed (tools/install-deps)"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/onceiot-images.XXXXXX")
export CONTAINERS_CONF=$work/containers.conf
cat >"$CONTAINERS_CONF" <<CONF
[containers]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
pod=(podman --root "$work/root" --runroot "$work/run" --storage-driver vfs)
name=onceiot-images-test-$$
cleanup() {
    "${pod[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true
    "${pod[@]}" rmi -a -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    "${pod[@]}" logs "$name" 2>&1 | tail -n 30 || true
    exit 1
}

start=$SECONDS
"$src/tools/images" --build-dir "$build" --out "$work/out" --tag test identity
echo "image built in $((SECONDS - start)) s"
"${pod[@]}" load -q -i "$work/out/onceiot-identity.oci.tar" >/dev/null

db=onceiot_images
"$psql" -X -q -v ON_ERROR_STOP=1 "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
    -c "CREATE DATABASE $db"
"$psql" -X -q -v ON_ERROR_STOP=1 "${url%/*}/$db" -c "CREATE SCHEMA identity"
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
mapfile -t keys < <("$build/tools/onceiot-keys" "$(hex)" identity)
envs=()
for kv in "${keys[@]}" "ONCEIOT_LISTEN=127.0.0.1:$port" "ONCEIOT_DATABASE_URL=${url%/*}/$db" \
    "ONCEIOT_SCHEMA_DIR=/usr/share/onceiot/schema/identity" \
    "ONCEIOT_TOKEN_SIGNING_KEY=$(hex)" "ONCEIOT_API_KEY_PEPPER=$(hex)" \
    "ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=$(hex)"; do
    envs+=(-e "$kv")
done
nofile=$(ulimit -Hn)
"${pod[@]}" run -d --name "$name" --read-only --cap-drop ALL --security-opt no-new-privileges \
    --user 10001:10001 --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096 \
    "${envs[@]}" localhost/onceiot/identity:test serve >/dev/null || fail "podman run failed"
"$build/tools/onceiot-health" "127.0.0.1:$port" --wait-ms 30000 --timeout-ms 2000 ||
    fail "identity in its container is not SERVING on 127.0.0.1:$port"

# What runs is what was asked for: user 10001, no capability at all.
pid=$("${pod[@]}" inspect -f '{{.State.Pid}}' "$name")
grep -Eq '^Uid:[[:space:]]+10001[[:space:]]+10001' "/proc/$pid/status" || fail "not running as 10001"
grep -Eq '^CapEff:[[:space:]]+0+$' "/proc/$pid/status" || fail "has capabilities"
grep -Eq '^NoNewPrivs:[[:space:]]+1' "/proc/$pid/status" || fail "may gain privileges"
[[ "$("${pod[@]}" inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$name")" == true ]] || fail "root filesystem writable"
n=$("$psql" -X -At "${url%/*}/$db" -c "SELECT count(*) FROM identity.schema_migrations" 2>/dev/null ||
    "$psql" -X -At "${url%/*}/$db" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'identity'")
((n > 0)) || fail "the migrations in the image were not applied"
"${pod[@]}" stop -t 10 "$name" >/dev/null
[[ "$("${pod[@]}" inspect -f '{{.State.ExitCode}}' "$name")" == 0 ]] || fail "identity did not exit 0 on SIGTERM"
"$psql" -X -q "$url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
echo "1 passed, 0 failed"
