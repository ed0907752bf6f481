// A client that is not ours (grpc-js-reflection-client on @grpc/grpc-js)
// lists and describes a running onceiot binary through server reflection,
// then calls a method with no local .proto file at all.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const { GrpcReflection } = require('grpc-js-reflection-client');

const buildDir = process.env.ONCEIOT_BUILD_DIR;
const sourceDir = process.env.ONCEIOT_SOURCE_DIR;
const pgUrl = process.env.ONCEIOT_TEST_PG_URL;

let proc;
let addr;

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

async function waitForReflection(deadlineMs) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      const c = new GrpcReflection(addr, grpc.ChannelCredentials.createInsecure());
      return await c.listServices();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

before(async () => {
  assert.ok(buildDir && sourceDir, 'run through ctest (ONCEIOT_BUILD_DIR/ONCEIOT_SOURCE_DIR)');
  assert.ok(pgUrl, 'ONCEIOT_TEST_PG_URL is not set; run via ./tools/stack test');
  addr = `127.0.0.1:${await freePort()}`;
  proc = spawn(path.join(buildDir, 'tests', 'onceiot-testsvc'), [], {
    env: {
      ...process.env,
      ONCEIOT_LISTEN: addr,
      ONCEIOT_DATABASE_URL: pgUrl,
      ONCEIOT_SCHEMA_DIR: path.join(sourceDir, 'tests', 'testsvc', 'schema'),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitForReflection(20000);
});

after(async () => {
  if (!proc) return;
  const exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  proc.kill('SIGTERM');
  assert.equal(await exited, 0, 'the service drains and exits 0');
});

test('lists every service the binary serves', async () => {
  const services = await waitForReflection(1000);
  for (const s of [
    'onceiot.test.v1.TestService',
    'grpc.health.v1.Health',
    'grpc.reflection.v1.ServerReflection',
    'grpc.reflection.v1alpha.ServerReflection',
  ]) {
    assert.ok(services.includes(s), `${s} in ${services}`);
  }
});

test('describes the methods of a service', async () => {
  const c = new GrpcReflection(addr, grpc.ChannelCredentials.createInsecure());
  const methods = await c.listMethods('onceiot.test.v1.TestService');
  const byName = Object.fromEntries(methods.map((m) => [m.name, m]));
  assert.deepEqual(Object.keys(byName).sort(), ['Count', 'Echo', 'Insert', 'Sleep', 'Sum']);
  assert.equal(byName.Count.definition.responseStream, true);
  assert.equal(byName.Sum.definition.requestStream, true);
  assert.equal(byName.Echo.definition.requestStream, false);
});

test('calls a method from the downloaded descriptors only', async () => {
  const c = new GrpcReflection(addr, grpc.ChannelCredentials.createInsecure());
  const descriptor = await c.getDescriptorBySymbol('onceiot.test.v1.TestService');
  const pkg = descriptor.getPackageObject({ keepCase: true, defaults: true });
  const Client = pkg.onceiot.test.v1.TestService;
  const client = new Client(addr, grpc.credentials.createInsecure());
  const reply = await new Promise((resolve, reject) =>
    client.Echo({ text: 'from node' }, (err, r) => (err ? reject(err) : resolve(r))));
  assert.equal(reply.text, 'from node');
  const err = await new Promise((resolve) =>
    client.Echo({ violations: ['name: must not be empty'] }, (e) => resolve(e)));
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.match(err.details, /name: must not be empty/);
  client.close();
});
