"""A user's session through the gateway from Python: log in, create an API
key and work with it (import SIMs, activate one, top up its SMS quota, send
it an SMS) while watching the events of those actions arrive on a
WatchEvents stream, and read a refused call's google.rpc.BadRequest from its
grpc-status-details-bin trailer. The client is generated from proto/ at the
start (tests/python/onceiot_client.py, into the build tree); identity, sims
and onceiot-gateway are the real processes, spawned here on free ports
against the test PostgreSQL (run through ./tools/stack test: ctest sets
ONCEIOT_BUILD_DIR and ONCEIOT_SOURCE_DIR, tools/stack ONCEIOT_TEST_PG_URL).
"""
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onceiot_client  # noqa: E402

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

BUILD_DIR = os.environ.get("ONCEIOT_BUILD_DIR", "")
SOURCE_DIR = os.environ.get("ONCEIOT_SOURCE_DIR", onceiot_client.SOURCE_DIR)
PG_URL = os.environ.get("ONCEIOT_TEST_PG_URL", "")
PASSWORD = "a-long-enough-password"
CALL_TIMEOUT_S = 10
WAIT_S = 30

api = None  # the generated modules (onceiot_client.Api), once setUpClass made them


# ---- JSON objects on the wire ----
# SIM metadata and event data are google.protobuf.Struct: the generated
# classes read and write them as dicts. Struct numbers are doubles, so an
# integer comes back as a float that compares equal to it.

def set_sim_metadata(sim_input, obj):
    sim_input.metadata.update(obj)


def sim_metadata(sim):
    return json_format.MessageToDict(sim.metadata)


def event_data(event):
    return json_format.MessageToDict(event.data)


# ---- the stack ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql):
    subprocess.run(["psql", PG_URL, "-qXv", "ON_ERROR_STOP=1", "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


class Proc:
    """One of our binaries, logging to build/testlogs."""

    def __init__(self, name, binary, env):
        self.name = name
        self.addr = f"127.0.0.1:{free_port()}"
        logs = os.path.join(BUILD_DIR, "testlogs")
        os.makedirs(logs, exist_ok=True)
        self.log = os.path.join(logs, f"python-{name}-{os.getpid()}.log")
        with open(self.log, "w") as out:
            self.p = subprocess.Popen([os.path.join(BUILD_DIR, binary)],
                                      env={**os.environ, "ONCEIOT_LISTEN": self.addr,
                                           "ONCEIOT_GRACE_MS": "3000", **env},
                                      stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT)

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def fail(self, what):
        raise AssertionError(f"{self.name} {what}\n---- {self.log} ----\n{self.log_text()[-4000:]}")

    def wait_serving(self):
        # First the port (a probe that connects too early waits out gRPC's
        # reconnect backoff), then the health service.
        end = time.monotonic() + WAIT_S
        host, port = self.addr.split(":")
        while True:
            if self.p.poll() is not None:
                self.fail(f"exited with {self.p.returncode} during start")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > end:
                    self.fail(f"does not listen on {self.addr} after {WAIT_S} s")
                time.sleep(0.05)
        probe = os.path.join(BUILD_DIR, "tools", "onceiot-health")
        r = subprocess.run([probe, self.addr, "--wait-ms", str(WAIT_S * 1000),
                            "--timeout-ms", "1000"], capture_output=True, text=True)
        if r.returncode != 0:
            self.fail(f"is not SERVING: {r.stdout.strip()}")

    def stop(self):
        """SIGTERM; returns the exit code (None: killed after 20 s)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                return None
        return self.p.returncode


def keys_of(root, *names):
    """The ONCEIOT_PRINCIPAL_* variables onceiot-keys derives for a process."""
    out = subprocess.run([os.path.join(BUILD_DIR, "tools", "onceiot-keys"), root, *names],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def eventually(fn, seconds=WAIT_S):
    """fn() once it stops raising, retrying every 200 ms for up to seconds."""
    end = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def bearer(secret):
    return (("authorization", f"Bearer {secret}"),)


class Watch:
    """A WatchEvents stream read on a thread of its own into a queue, so the
    test waits for events with a bounded timeout."""

    def __init__(self, stub, metadata):
        self.call = stub.WatchEvents(api.sims.WatchEventsRequest(), metadata=metadata,
                                     timeout=2 * WAIT_S)
        # The subscription is in effect once the headers arrive: every event
        # committed from then on is streamed.
        self.call.initial_metadata()
        self.events = []
        self.q = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for ev in self.call:
                self.q.put(ev)
        except grpc.RpcError as e:
            self.q.put(e)

    def wait_until(self, done, seconds=WAIT_S):
        """Collects events until done(events) holds; fails after seconds."""
        end = time.monotonic() + seconds
        while not done(self.events):
            left = end - time.monotonic()
            try:
                item = self.q.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"events seen within {seconds} s: "
                                     f"{[(e.iccid, e.event_type) for e in self.events]}")
            if isinstance(item, grpc.RpcError):
                raise AssertionError(f"the stream ended: {item.code()} {item.details()}")
            self.events.append(item)
        return self.events

    def close(self):
        self.call.cancel()
        self.thread.join(10)


def new_iccid():
    return "8988" + "".join(secrets.choice("0123456789") for _ in range(15))


class GatewayScenario(unittest.TestCase):
    procs = []

    @classmethod
    def setUpClass(cls):
        global api
        if not (BUILD_DIR and PG_URL):
            raise unittest.SkipTest("run through ./tools/stack test (ctest and the test cluster)")
        api = onceiot_client.Api(onceiot_client.generate(
            os.path.join(BUILD_DIR, "tests", "python", "gen"), SOURCE_DIR))
        psql("SET client_min_messages = warning;"
             "CREATE SCHEMA IF NOT EXISTS partman;"
             "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;"
             "CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;"
             "DROP SCHEMA IF EXISTS identity CASCADE; DROP SCHEMA IF EXISTS sims CASCADE")
        root = secrets.token_hex(32)  # the deployer's root of every principal key
        db = {"ONCEIOT_DATABASE_URL": PG_URL, "ONCEIOT_HEALTH_INTERVAL_MS": "100"}
        try:
            identity = cls.start("identity", {
                **db, **keys_of(root, "identity"),
                "ONCEIOT_SCHEMA_DIR": os.path.join(SOURCE_DIR, "schema", "identity"),
                "ONCEIOT_TOKEN_SIGNING_KEY": secrets.token_hex(32),
                "ONCEIOT_API_KEY_PEPPER": secrets.token_hex(32),
                "ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD})
            sims = cls.start("sims", {
                **db, **keys_of(root, "sims"),
                "ONCEIOT_SCHEMA_DIR": os.path.join(SOURCE_DIR, "schema", "sims")})
            nowhere = f"127.0.0.1:{free_port()}"
            gateway = cls.start("gateway", {
                **keys_of(root, "gateway", "identity", "sims", "usage", "commerce", "support"),
                "ONCEIOT_IDENTITY_ADDR": identity.addr, "ONCEIOT_SIMS_ADDR": sims.addr,
                "ONCEIOT_USAGE_ADDR": nowhere, "ONCEIOT_COMMERCE_ADDR": nowhere,
                "ONCEIOT_SUPPORT_ADDR": nowhere})
            for p in cls.procs:
                p.wait_serving()
            cls.channel = grpc.insecure_channel(gateway.addr)
            cls.identity = api.identity_grpc.IdentityServiceStub(cls.channel)
            cls.sims = api.sims_grpc.SimServiceStub(cls.channel)
            # The gateway is SERVING once it can authenticate; the first Login
            # may still race its first look at identity.
            cls.login = eventually(lambda: cls.identity.Login(
                api.identity.LoginRequest(username="admin", password=PASSWORD),
                timeout=CALL_TIMEOUT_S))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start(cls, name, env):
        p = Proc(name, os.path.join("services", f"onceiot-{name}"), env)
        cls.procs.append(p)
        return p

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "channel", None):
            cls.channel.close()
        failures = []
        for p in reversed(cls.procs):
            code = p.stop()
            log = p.log_text()
            if code != 0:
                failures.append(f"{p.name} exited with {code}")
            for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if mark in log:
                    failures.append(f"{p.name}: {mark} (see {p.log})")
            if code != 0 or any(p.name in f for f in failures):
                sys.stderr.write(f"---- {p.log} ----\n{log[-6000:]}\n")
        cls.procs = []
        if failures:
            raise AssertionError("; ".join(failures))

    def test_user_session(self):
        ids = api.identity
        # Log in: a PASETO token for the bootstrap admin.
        login = self.login
        self.assertTrue(login.token.startswith("v4.public."), login.token[:20])
        self.assertEqual(login.user.username, "admin")
        self.assertTrue(login.user.is_superuser)
        self.assertGreater(login.expires_at.seconds, time.time())
        me = self.identity.GetUser(ids.GetUserRequest(id=login.user.id),
                                   metadata=bearer(login.token), timeout=CALL_TIMEOUT_S)
        self.assertEqual(me.username, "admin")

        # An API key for the SIM work, made with the token.
        created = self.identity.CreateApiKey(
            ids.CreateApiKeyRequest(name="python-e2e", scopes=["sims:read", "sims:write"]),
            metadata=bearer(login.token), timeout=CALL_TIMEOUT_S)
        key = created.secret
        self.assertTrue(key.startswith("sk_live_"), key[:8])
        self.assertTrue(key.startswith(created.api_key.prefix))
        self.assertEqual(list(created.api_key.scopes), ["sims:read", "sims:write"])
        self.assertEqual(created.api_key.user_id, login.user.id)
        self.assertTrue(created.api_key.is_active)
        md = bearer(key)
        # The key holds only its scopes: no users:read.
        with self.assertRaises(grpc.RpcError) as denied:
            self.identity.ListUsers(ids.ListUsersRequest(), metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual(denied.exception.code(), grpc.StatusCode.PERMISSION_DENIED)

        watch = Watch(self.sims, md)
        try:
            self.session_with_key(md, created.api_key.id, login.user.organization_id, watch)
        finally:
            watch.close()

    def session_with_key(self, md, key_id, org, watch):
        sims = api.sims
        a, b, c = sorted(new_iccid() for _ in range(3))
        inputs = []
        for n, iccid in enumerate((a, b, c)):
            s = sims.SimInput(iccid=iccid, label=f"python-{n}", tags=["python", f"n{n}"])
            set_sim_metadata(s, {"site": "python-e2e", "slot": n,
                                 "rack": {"row": [1, 2.5, None, True], "tags": []}})
            inputs.append(s)
        imported = self.sims.ImportSims(sims.ImportSimsRequest(sims=inputs), metadata=md,
                                        timeout=CALL_TIMEOUT_S)
        self.assertEqual(imported.imported, 3)
        listed = self.sims.ListSims(sims.ListSimsRequest(tag="python", page_size=10),
                                    metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual([s.iccid for s in listed.sims], [a, b, c])
        for n, s in enumerate(listed.sims):
            self.assertEqual(s.status, sims.SIM_STATUS_DISABLED)
            self.assertEqual(s.label, f"python-{n}")
            self.assertEqual(list(s.tags), ["python", f"n{n}"])
            self.assertEqual(sim_metadata(s), {"site": "python-e2e", "slot": n,
                                               "rack": {"row": [1, 2.5, None, True], "tags": []}})
            self.assertEqual(s.organization_id, org)

        active = self.sims.ActivateSim(sims.SimActionRequest(iccid=a, reason="python e2e"),
                                       metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual(active.status, sims.SIM_STATUS_ENABLED)
        self.assertGreater(active.activation_date.seconds, 0)

        # A top-up, and its retry with the same request id: one answer, applied once.
        top_up = sims.TopUpQuotaRequest(iccid=a, quota_type=sims.QUOTA_TYPE_SMS, volume=5,
                                        request_id=f"python-{secrets.token_hex(8)}")
        quota = self.sims.TopUpQuota(top_up, metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual((quota.iccid, quota.quota_type, quota.volume, quota.remaining_volume,
                          quota.last_volume_added), (a, sims.QUOTA_TYPE_SMS, 5, 5, 5))
        again = self.sims.TopUpQuota(top_up, metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual(again, quota)

        sms = self.sims.SendSms(sims.SendSmsRequest(iccid=a, text="hello from python"),
                                metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertGreater(sms.id, 0)
        self.assertEqual((sms.iccid, sms.text, sms.direction, sms.status, sms.segments,
                          sms.encoding),
                         (a, "hello from python", sims.SMS_DIRECTION_MT, sims.SMS_STATUS_PENDING,
                          1, sims.SMS_ENCODING_GSM7))
        quota = self.sims.GetQuota(sims.GetQuotaRequest(iccid=a, quota_type=sims.QUOTA_TYPE_SMS),
                                   metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual((quota.volume, quota.used_volume, quota.remaining_volume), (5, 1, 4))

        # The stream saw each of those writes, in commit order, as the key's.
        expected = [(a, "sim_created"), (b, "sim_created"), (c, "sim_created"),
                    (a, "sim_activated"), (a, "quota_added"), (a, "sms_mt_queued")]
        ours = {a, b, c}

        def mine(events):
            return [e for e in events if e.iccid in ours]

        seen = mine(watch.wait_until(lambda evs: len(mine(evs)) >= len(expected)))
        self.assertEqual(sorted((e.iccid, e.event_type) for e in seen[:3]), expected[:3])
        self.assertEqual([(e.iccid, e.event_type) for e in seen[3:]], expected[3:])
        ids = [e.id for e in seen]
        self.assertEqual(ids, sorted(ids))
        for e in seen:
            self.assertEqual(e.triggered_by, f"api_key:{key_id}")
            self.assertEqual(e.organization_id, org)
        by_type = {e.event_type: e for e in seen if e.iccid == a}
        self.assertEqual(by_type["quota_added"].event_category, "quota")
        self.assertEqual(event_data(by_type["quota_added"]), {"quota_type": "sms", "added": 5})
        self.assertEqual(event_data(by_type["sms_mt_queued"]), {"sms_id": sms.id, "segments": 1})
        self.assertEqual(by_type["sim_activated"].event_category, "status")
        # The same events as stored (ListEvents is newest first).
        stored = self.sims.ListEvents(sims.ListEventsRequest(iccid=a, page_size=50),
                                      metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual([e.id for e in reversed(stored.events)],
                         [e.id for e in seen if e.iccid == a])

    def test_bad_request_details(self):
        sims = api.sims
        md = bearer(self.login.token)
        iccid = new_iccid()
        self.sims.ImportSims(sims.ImportSimsRequest(sims=[sims.SimInput(iccid=iccid,
                                                                        sms_volume=3)]),
                             metadata=md, timeout=CALL_TIMEOUT_S)

        # Two bad fields at once: no quota type, no volume.
        with self.assertRaises(grpc.RpcError) as refused:
            self.sims.TopUpQuota(sims.TopUpQuotaRequest(iccid=iccid, volume=0), metadata=md,
                                 timeout=CALL_TIMEOUT_S)
        err = refused.exception
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT)
        status = api.status_of(err)
        self.assertIsNotNone(status, f"no grpc-status-details-bin in {err.trailing_metadata()}")
        self.assertEqual(status.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertEqual(status.message, err.details())
        self.assertEqual([d.type_url for d in status.details],
                         ["type.googleapis.com/google.rpc.BadRequest"])
        bad = api.bad_request_of(err)
        self.assertEqual(sorted((v.field, v.description) for v in bad.field_violations),
                         [("quota_type", "must be QUOTA_TYPE_DATA or QUOTA_TYPE_SMS"),
                          ("volume", "must be positive")])
        for v in bad.field_violations:
            self.assertIn(f"{v.field}: {v.description}", err.details())

        # ... and it changed nothing.
        quota = self.sims.GetQuota(sims.GetQuotaRequest(iccid=iccid,
                                                        quota_type=sims.QUOTA_TYPE_SMS),
                                   metadata=md, timeout=CALL_TIMEOUT_S)
        self.assertEqual((quota.volume, quota.remaining_volume), (3, 3))
        events = self.sims.ListEvents(sims.ListEventsRequest(iccid=iccid), metadata=md,
                                      timeout=CALL_TIMEOUT_S)
        self.assertEqual([e.event_type for e in events.events], ["sim_created"])

        # An error without details: a SIM nobody has.
        with self.assertRaises(grpc.RpcError) as missing:
            self.sims.GetSim(sims.GetSimRequest(iccid=new_iccid()), metadata=md,
                             timeout=CALL_TIMEOUT_S)
        self.assertEqual(missing.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIsNone(api.bad_request_of(missing.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
