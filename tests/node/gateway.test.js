// A client built from our .proto files in another language (@grpc/grpc-js +
// @grpc/proto-loader) calls identity and sims through the gateway with an
// API key: the real identity, sims and gateway processes, spawned here.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const buildDir = process.env.ONCEIOT_BUILD_DIR;
const sourceDir = process.env.ONCEIOT_SOURCE_DIR;
const pgUrl = process.env.ONCEIOT_TEST_PG_URL;

const procs = [];
let client;
let simsClient;
let adminKey;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

function start(binary, env) {
  const p = spawn(path.join(buildDir, binary), [], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  procs.push(p);
  return p;
}

// Resolves once fn() stops throwing, or rejects after deadlineMs.
async function eventually(fn, deadlineMs) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function callOn(stub, method, req, md) {
  return new Promise((resolve, reject) => {
    stub[method](req, md, { deadline: Date.now() + 5000 }, (err, res) =>
      err ? reject(err) : resolve(res),
    );
  });
}

const call = (method, req, md) => callOn(client, method, req, md);

// google.protobuf.Struct as proto-loader reads and writes it ({fields: {k:
// {stringValue: ...}}}, the kind named by the oneof) <-> plain JSON values.
function toValue(v) {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  switch (typeof v) {
    case 'number': return { numberValue: v };
    case 'string': return { stringValue: v };
    case 'boolean': return { boolValue: v };
    default: return { structValue: toStruct(v) };
  }
}

function toStruct(obj) {
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, toValue(v)])) };
}

function fromValue(v) {
  switch (v.kind) {
    case 'nullValue': return null;
    case 'listValue': return (v.listValue.values || []).map(fromValue);
    case 'structValue': return fromStruct(v.structValue);
    default: return v[v.kind];
  }
}

function fromStruct(s) {
  return Object.fromEntries(Object.entries((s && s.fields) || {}).map(([k, v]) => [k, fromValue(v)]));
}

function bearer(secret) {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${secret}`);
  return md;
}

before(async () => {
  assert.ok(buildDir && sourceDir, 'run through ctest (ONCEIOT_BUILD_DIR/ONCEIOT_SOURCE_DIR)');
  assert.ok(pgUrl, 'ONCEIOT_TEST_PG_URL is not set; run via ./tools/stack test');
  execFileSync('psql', [pgUrl, '-qc', 'SET client_min_messages = warning; '
    + 'CREATE SCHEMA IF NOT EXISTS partman; CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman; '
    + 'CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public; '
    + 'DROP SCHEMA IF EXISTS identity CASCADE; DROP SCHEMA IF EXISTS sims CASCADE']);
  const hex = () => crypto.randomBytes(32).toString('hex');
  // The deployer's root; each process gets the keys onceiot-keys derives.
  const root = hex();
  const keysOf = (...args) => Object.fromEntries(
    execFileSync(path.join(buildDir, 'tools', 'onceiot-keys'), [root, ...args], { encoding: 'utf8' })
      .trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
  const keyFile = path.join(os.tmpdir(), `onceiot-node-gw-${process.pid}.key`);
  fs.rmSync(keyFile, { force: true });
  const identityAddr = `127.0.0.1:${await freePort()}`;
  const simsAddr = `127.0.0.1:${await freePort()}`;
  const gatewayAddr = `127.0.0.1:${await freePort()}`;
  const nowhere = `127.0.0.1:${await freePort()}`;
  start(path.join('services', 'onceiot-identity'), {
    ONCEIOT_LISTEN: identityAddr,
    ONCEIOT_DATABASE_URL: pgUrl,
    ...keysOf('identity'),
    ONCEIOT_TOKEN_SIGNING_KEY: hex(),
    ONCEIOT_API_KEY_PEPPER: hex(),
    ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD: 'a-long-enough-password',
    ONCEIOT_BOOTSTRAP_KEY_FILE: keyFile,
  });
  start(path.join('services', 'onceiot-sims'), {
    ONCEIOT_LISTEN: simsAddr,
    ONCEIOT_DATABASE_URL: pgUrl,
    ONCEIOT_SCHEMA_DIR: path.join(sourceDir, 'schema', 'sims'),
    ...keysOf('sims'),
  });
  start(path.join('services', 'onceiot-gateway'), {
    ONCEIOT_LISTEN: gatewayAddr,
    ...keysOf('gateway', 'identity', 'sims', 'usage', 'commerce', 'support'),
    ONCEIOT_IDENTITY_ADDR: identityAddr,
    ONCEIOT_SIMS_ADDR: simsAddr,
    ONCEIOT_USAGE_ADDR: nowhere,
    ONCEIOT_COMMERCE_ADDR: nowhere,
    ONCEIOT_SUPPORT_ADDR: nowhere,
  });
  adminKey = await eventually(() => {
    const k = fs.readFileSync(keyFile, 'utf8').trim();
    if (!k) throw new Error('no key yet');
    return k;
  }, 30000);
  fs.rmSync(keyFile, { force: true });

  const def = protoLoader.loadSync('identity/v1/identity.proto', {
    includeDirs: [path.join(sourceDir, 'proto'), '/usr/include'],
    longs: String,
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def);
  client = new pkg.onceiot.identity.v1.IdentityService(
    gatewayAddr,
    grpc.credentials.createInsecure(),
  );
  await eventually(() => call('getUser', { id: 1 }, bearer(adminKey)), 30000);

  const simsDef = protoLoader.loadSync('sims/v1/sims.proto', {
    includeDirs: [path.join(sourceDir, 'proto'), '/usr/include'],
    longs: String,
    enums: String,
    oneofs: true,
  });
  simsClient = new (grpc.loadPackageDefinition(simsDef).onceiot.sims.v1.SimService)(
    gatewayAddr,
    grpc.credentials.createInsecure(),
  );
  await eventually(() => callOn(simsClient, 'listSims', { pageSize: 1 }, bearer(adminKey)), 30000);
});

after(async () => {
  if (client) client.close();
  if (simsClient) simsClient.close();
  for (const p of procs.reverse()) {
    const exited = new Promise((r) => p.on('exit', (code) => r(code)));
    p.kill('SIGTERM');
    assert.equal(await exited, 0, 'the process drains and exits 0');
  }
});

test('GetUser through the gateway with an API key', async () => {
  const user = await call('getUser', { id: 1 }, bearer(adminKey));
  assert.equal(user.username, 'admin');
  assert.equal(user.id, '1');
});

test('ListUsers through the gateway with an API key', async () => {
  const res = await call('listUsers', { pageSize: 10 }, bearer(adminKey));
  assert.ok(res.users.some((u) => u.username === 'admin'));
});

test('no credentials is UNAUTHENTICATED, a bad key too', async () => {
  await assert.rejects(call('getUser', { id: 1 }, new grpc.Metadata()), {
    code: grpc.status.UNAUTHENTICATED,
  });
  await assert.rejects(call('getUser', { id: 1 }, bearer('sk_live_nope')), {
    code: grpc.status.UNAUTHENTICATED,
  });
});

test('SIM metadata is a JSON object (google.protobuf.Struct) both ways', async () => {
  const metadata = {
    site: 'node', floor: 3, ratio: 2.5, on: true, off: false, none: null,
    rack: { row: [1, 'a', [false, null]], empty: {} }, list: [],
  };
  const iccid = '8988000000000000777';
  const created = await callOn(simsClient, 'createSim',
    { sim: { iccid, metadata: toStruct(metadata) } }, bearer(adminKey));
  assert.deepEqual(fromStruct(created.metadata), metadata);
  const got = await callOn(simsClient, 'getSim', { iccid }, bearer(adminKey));
  assert.deepEqual(fromStruct(got.metadata), metadata);

  let deep = 1; // 40 arrays in an object: deeper than the 32 levels allowed
  for (let i = 0; i < 40; i += 1) deep = [deep];
  await assert.rejects(
    callOn(simsClient, 'createSim',
      { sim: { iccid: '8988000000000000778', metadata: toStruct({ deep }) } }, bearer(adminKey)),
    (e) => e.code === grpc.status.INVALID_ARGUMENT && /sim\.metadata: must nest/.test(e.details),
  );
  await assert.rejects(callOn(simsClient, 'getSim', { iccid: '8988000000000000778' }, bearer(adminKey)),
    { code: grpc.status.NOT_FOUND });
});
