#!/usr/bin/env bash
# Leak check of a real onceiot-testsvc under valgrind: start it against the
# test database, wait for SERVING, make a call of each kind, SIGTERM it, and
# fail unless valgrind saw no errors and no definitely or indirectly lost
# memory.
#
# usage: run.sh BUILD_DIR SOURCE_DIR   (CTest passes both; needs
# ONCEIOT_TEST_PG_URL, as for every database test)
set -euo pipefail

build=${1:?usage: run.sh BUILD_DIR SOURCE_DIR}
src=${2:?usage: run.sh BUILD_DIR SOURCE_DIR}
url=${ONCEIOT_TEST_PG_URL:?ONCEIOT_TEST_PG_URL is not set; run tests via ./tools/stack test}
py=/usr/bin/python3

command -v valgrind >/dev/null || { echo "valgrind is not installed (tools/install-deps)"; exit 1; }

logdir=$build/testlogs
mkdir -p "$logdir"
log=$logdir/valgrind-testsvc-$$.log
port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port

# jemalloc replaces malloc in our binaries; --soname-synonyms makes valgrind
# intercept jemalloc's malloc/free as it does libc's, so every allocation is
# tracked.
ONCEIOT_LISTEN=$addr \
ONCEIOT_DATABASE_URL=$url \
ONCEIOT_SCHEMA_DIR=$src/tests/testsvc/schema \
ONCEIOT_HEALTH_INTERVAL_MS=500 \
ONCEIOT_GRACE_MS=5000 \
  valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
    --show-leak-kinds=definite,indirect --num-callers=30 \
    --soname-synonyms=somalloc=libjemalloc.so* \
    --suppressions="$src/tests/valgrind/grpc.supp" \
    "$build/tests/onceiot-testsvc" >"$log" 2>&1 &
pid=$!
# Never leave valgrind running behind us, whatever fails.
trap 'kill -KILL $pid 2>/dev/null || true' EXIT

fail() {
    echo "FAIL: $*"
    echo "---- $log ----"
    cat "$log"
    exit 1
}

"$build/tools/onceiot-health" "$addr" --wait-ms 60000 --timeout-ms 5000 >/dev/null ||
    fail "testsvc under valgrind did not become SERVING within 60 s"

# A client that is not ours: grpcio from Debian, with generic calls on raw
# bytes (hand-encoded protobuf, so no generated Python code is needed).
$py - "$addr" <<'PY' || fail "calls to testsvc under valgrind failed"
import sys, time
import grpc

addr = sys.argv[1]
svc = "/onceiot.test.v1.TestService/"

def string_field(number, text):
    data = text.encode()
    return bytes([number << 3 | 2, len(data)]) + data

def varint_field(number, value):
    out = bytes([number << 3])
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

with grpc.insecure_channel(addr) as ch:
    echo = ch.unary_unary(svc + "Echo")(string_field(1, "hello valgrind"), timeout=30)
    assert echo.startswith(string_field(1, "hello valgrind")), echo

    name = "valgrind-%d" % time.time_ns()
    insert = ch.unary_unary(svc + "Insert")(string_field(1, name) + varint_field(2, 7),
                                            timeout=30)
    assert insert[:1] == b"\x08", insert  # InsertReply.id

    replies = list(ch.unary_stream(svc + "Count")(varint_field(1, 5), timeout=30))
    assert replies == [varint_field(1, n) for n in range(1, 6)], replies

    try:
        ch.unary_unary(svc + "Echo")(varint_field(2, 5), timeout=30)  # fail_code NOT_FOUND
        raise AssertionError("Echo with fail_code 5 succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
PY

kill -TERM $pid
rc=0
wait $pid || rc=$?
trap - EXIT

[ "$rc" -eq 0 ] || fail "valgrind/testsvc exited with $rc (99: valgrind found errors or leaks)"
grep -q "ERROR SUMMARY: 0 errors" "$log" || fail "valgrind reported errors"
grep -Eq "definitely lost: 0 bytes|All heap blocks were freed" "$log" ||
    fail "valgrind reported definitely lost memory"
grep -Eq "indirectly lost: 0 bytes|All heap blocks were freed" "$log" ||
    fail "valgrind reported indirectly lost memory"
grep -q '"event":"drain_finished"' "$log" || fail "testsvc did not drain"
echo "valgrind: clean ($log)"
