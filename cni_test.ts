/**
 * End-to-end tests of the CNI plugin: `cni.ts` runs for real as a `deno run` subprocess with a
 * runtime-like environment, against an in-process {@link RpcServer}.
 */

import assert from "node:assert/strict";
import { RpcServer } from "./agent/rpc_server.ts";
import { run } from "./agent/exec.ts";
import { buildAddResult } from "./agent/cni_result.ts";
import { connectFailure } from "./cni.ts";
import {
  CniError,
  type RpcRequest,
  type RpcResponse,
  SUPPORTED_VERSIONS,
} from "./agent/protocol.ts";

const CONFIG = { cniVersion: "1.0.0", name: "flock-net", type: "flock", extra: { keep: [1, 2] } };

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** A temp dir with a wrapper that runs cniMain the way main.ts does, and an agent socket. */
interface Fixture {
  dir: string;
  socket: string;
  wrapper: string;
  requests: RpcRequest[];
  run(env: Record<string, string>, stdin: string | Uint8Array): Promise<Run>;
}

async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-cni-" });
  const wrapper = `${dir}/plugin.ts`;
  await Deno.writeTextFile(
    wrapper,
    `import { cniMain } from ${JSON.stringify(import.meta.resolve("./cni.ts"))};\n` +
      `Deno.exit(await cniMain());\n`,
  );
  const socket = `${dir}/run/flock.sock`;
  const requests: RpcRequest[] = [];
  const server = new RpcServer({ path: socket, handler: (req) => testHandler(req, requests) });
  await server.start();
  const fixture: Fixture = {
    dir,
    socket,
    wrapper,
    requests,
    run: (env, stdin) => runPlugin(wrapper, { FLOCK_SOCKET: socket, ...env }, stdin),
  };
  try {
    await fn(fixture);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The agent stand-in: ADD answers a Result, CHECK of "gone" fails, "crash" throws. */
function testHandler(req: RpcRequest, seen: RpcRequest[]): Promise<RpcResponse> {
  seen.push(req);
  if (req.containerId === "gone") {
    throw new CniError(3, "container gone", `no attachment for ${req.containerId}`);
  }
  if (req.containerId === "crash") throw new RangeError("kaboom");
  if (req.containerId === "slow") {
    return new Promise((resolve) => setTimeout(() => resolve({ ok: true }), 200));
  }
  if (req.command !== "ADD") return Promise.resolve({ ok: true });
  return Promise.resolve({ ok: true, result: resultFor(req) });
}

function resultFor(req: RpcRequest): Record<string, unknown> {
  return buildAddResult({
    cniVersion: String(req.config.cniVersion),
    hostIface: "flock0a0b0c0d",
    hostMac: "02:00:00:00:00:01",
    ifname: req.ifname,
    podMac: "02:00:00:00:00:02",
    netns: req.netns,
    ipv6: "fd00::7",
    ipv4: "10.0.0.7",
  });
}

/** Runs the plugin with only `env` (a runtime's minimal environment: no HOME, no PATH). */
async function runPlugin(
  wrapper: string,
  env: Record<string, string>,
  stdin: string | Uint8Array,
): Promise<Run> {
  return await run([Deno.execPath(), "run", "--allow-all", "--no-lock", "--quiet", wrapper], {
    env,
    clearEnv: true,
    stdin,
  });
}

function addEnv(overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string | undefined> = {
    CNI_COMMAND: "ADD",
    CNI_CONTAINERID: "c0ffee",
    CNI_NETNS: "/var/run/netns/cni-test",
    CNI_IFNAME: "eth0",
    CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
    CNI_PATH: "/opt/cni/bin",
    ...overrides,
  };
  return Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined)) as Record<
    string,
    string
  >;
}

/** stdout must be exactly one JSON document and a newline. */
function onlyJson(run: Run): Record<string, unknown> {
  assert.ok(run.stdout.endsWith("\n"), `stdout: ${JSON.stringify(run.stdout)}`);
  assert.equal(run.stdout.indexOf("\n"), run.stdout.length - 1, "one line on stdout");
  return JSON.parse(run.stdout);
}

function expectError(run: Run, code: number, msg: RegExp | string): Record<string, unknown> {
  assert.equal(run.code, 1, `exit code; stderr: ${run.stderr}`);
  const body = onlyJson(run);
  assert.equal(body.code, code, JSON.stringify(body));
  if (typeof msg === "string") assert.equal(body.msg, msg);
  else assert.match(String(body.msg), msg);
  assert.equal(typeof body.cniVersion, "string");
  return body;
}

Deno.test("cni: VERSION is answered locally", async () => {
  await withFixture(async (f) => {
    const env = { CNI_COMMAND: "VERSION", CNI_NETNS: "dummy", CNI_IFNAME: "dummy" };
    // No socket at all: VERSION must not need the agent.
    const run = await runPlugin(
      f.wrapper,
      { ...env, FLOCK_SOCKET: "/nonexistent" },
      '{"cniVersion":"1.0.0"}',
    );
    assert.equal(run.code, 0);
    assert.deepEqual(onlyJson(run), {
      cniVersion: "1.0.0",
      supportedVersions: [...SUPPORTED_VERSIONS],
    });
    const empty = await f.run(env, "");
    assert.equal(empty.code, 0);
    assert.deepEqual(onlyJson(empty), {
      cniVersion: "1.1.0",
      supportedVersions: [...SUPPORTED_VERSIONS],
    });
    assert.equal(f.requests.length, 0);
  });
});

Deno.test("cni: ADD prints the agent's Result exactly and forwards the invocation", async () => {
  await withFixture(async (f) => {
    const run = await f.run(addEnv(), JSON.stringify(CONFIG));
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, "");
    assert.equal(f.requests.length, 1);
    const req = f.requests[0];
    assert.deepEqual(req, {
      command: "ADD",
      containerId: "c0ffee",
      netns: "/var/run/netns/cni-test",
      ifname: "eth0",
      args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
      config: CONFIG,
    });
    assert.equal(run.stdout, JSON.stringify(resultFor(req)) + "\n");
  });
});

Deno.test("cni: DEL, CHECK, GC and STATUS print nothing on success", async () => {
  await withFixture(async (f) => {
    const cases = [
      addEnv({ CNI_COMMAND: "DEL", CNI_NETNS: "" }),
      addEnv({ CNI_COMMAND: "DEL", CNI_NETNS: undefined }),
      addEnv({ CNI_COMMAND: "CHECK" }),
      { CNI_COMMAND: "GC", CNI_CONTAINERID: "", CNI_NETNS: "", CNI_IFNAME: "", CNI_ARGS: "" },
      { CNI_COMMAND: "STATUS" },
    ];
    for (const env of cases) {
      const run = await f.run(env, JSON.stringify({ ...CONFIG, cniVersion: "1.1.0" }));
      assert.equal(run.code, 0, `${env.CNI_COMMAND}: ${run.stdout} ${run.stderr}`);
      assert.equal(run.stdout, "");
    }
    assert.deepEqual(f.requests.map((r) => r.command), ["DEL", "DEL", "CHECK", "GC", "STATUS"]);
    assert.equal(f.requests[0].netns, "");
  });
});

Deno.test("cni: agent errors go to stdout as CNI error JSON with exit 1", async () => {
  await withFixture(async (f) => {
    const config = { ...CONFIG, cniVersion: "0.4.0" };
    const run = await f.run(
      addEnv({ CNI_COMMAND: "CHECK", CNI_CONTAINERID: "gone" }),
      JSON.stringify(config),
    );
    const body = expectError(run, 3, "container gone");
    assert.deepEqual(body, {
      cniVersion: "0.4.0",
      code: 3,
      msg: "container gone",
      details: "no attachment for gone",
    });
    expectError(
      await f.run(addEnv({ CNI_CONTAINERID: "crash" }), JSON.stringify(CONFIG)),
      999,
      /kaboom/,
    );
  });
});

Deno.test("cni: environment errors are code 4 and name the variable", async () => {
  await withFixture(async (f) => {
    const config = JSON.stringify(CONFIG);
    const cases: [Record<string, string | undefined>, string][] = [
      [{ CNI_CONTAINERID: undefined }, "CNI_CONTAINERID"],
      [{ CNI_CONTAINERID: "has space" }, "CNI_CONTAINERID"],
      [{ CNI_IFNAME: undefined }, "CNI_IFNAME"],
      [{ CNI_IFNAME: "a-very-long-ifname" }, "CNI_IFNAME"],
      [{ CNI_IFNAME: "eth/0" }, "CNI_IFNAME"],
      [{ CNI_NETNS: undefined }, "CNI_NETNS"],
      [{ CNI_COMMAND: "CHECK", CNI_NETNS: "" }, "CNI_NETNS"],
    ];
    for (const [overrides, variable] of cases) {
      const body = expectError(await f.run(addEnv(overrides), config), 4, new RegExp(variable));
      assert.equal(body.cniVersion, "1.0.0");
    }
    expectError(
      await f.run(addEnv({ CNI_COMMAND: "FROB" }), config),
      4,
      "unknown CNI_COMMAND: FROB",
    );
    assert.equal(f.requests.length, 0, "nothing invalid reached the agent");
  });
});

Deno.test("cni: bad stdin is code 6, bad version code 1, missing name code 7", async () => {
  await withFixture(async (f) => {
    expectError(await f.run(addEnv(), '{"cniVersion":"1.0.0","name":'), 6, /decode/);
    expectError(await f.run(addEnv(), ""), 6, /decode/);
    expectError(await f.run(addEnv(), "[1,2]"), 6, /decode/);
    expectError(await f.run(addEnv(), new Uint8Array([0x7b, 0xc3, 0x28, 0x7d])), 6, /decode/);
    const v = expectError(await f.run(addEnv(), '{"cniVersion":"9.9.9","name":"n"}'), 1, /9\.9\.9/);
    assert.equal(v.cniVersion, "9.9.9");
    expectError(await f.run(addEnv(), '{"name":"n"}'), 1, /cniVersion/);
    expectError(await f.run(addEnv(), '{"cniVersion":"1.0.0"}'), 7, /name/);
    assert.equal(f.requests.length, 0);
  });
});

Deno.test("cni: agent down is code 11 naming the socket", async () => {
  await withFixture(async (f) => {
    const missing = `${f.dir}/nope.sock`;
    const body = expectError(
      await f.run(addEnv({ FLOCK_SOCKET: missing }), JSON.stringify(CONFIG)),
      11,
      "flock agent is not running",
    );
    assert.match(String(body.details), new RegExp(missing.replaceAll(".", "\\.")));
    assert.match(String(body.details), /No such file/);
    // The config's agentSocket wins over the environment.
    const viaConfig = await f.run(
      addEnv({ FLOCK_SOCKET: missing }),
      JSON.stringify({ ...CONFIG, agentSocket: f.socket }),
    );
    assert.equal(viaConfig.code, 0, viaConfig.stdout);
    const wrongConfig = await f.run(addEnv(), JSON.stringify({ ...CONFIG, agentSocket: missing }));
    expectError(wrongConfig, 11, "flock agent is not running");
  });
});

Deno.test("cni: a socket the caller may not open is not reported as an agent that is down", () => {
  const denied = connectFailure(
    "/run/flock/flock.sock",
    new Deno.errors.PermissionDenied("Permission denied (os error 13)"),
  );
  assert.deepEqual(denied, {
    ok: false,
    error: {
      code: 11,
      msg: "no permission to connect to the flock agent's socket (it is root's only)",
      details: "cannot connect to /run/flock/flock.sock: Permission denied (os error 13)",
    },
  });
  const missing = connectFailure("/x.sock", new Deno.errors.NotFound("No such file"));
  assert.equal(!missing.ok && missing.error.msg, "flock agent is not running");
});

Deno.test("cni: STATUS with the agent down is code 50 (STATUS has no code 11)", async () => {
  await withFixture(async (f) => {
    const missing = `${f.dir}/nope.sock`;
    const config = JSON.stringify({ ...CONFIG, cniVersion: "1.1.0" });
    const run = await f.run({ CNI_COMMAND: "STATUS", FLOCK_SOCKET: missing }, config);
    const body = expectError(run, 50, "flock agent is not running");
    assert.match(String(body.details), /No such file/);
  });
});

/** Serves one connection at `path` with `reply` (or never answers when reply is undefined). */
async function withFakeAgent(
  path: string,
  reply: string | undefined,
  fn: () => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ transport: "unix", path });
  const held: Deno.Conn[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      held.push(conn);
      const buf = new Uint8Array(65536);
      await conn.read(buf);
      if (reply !== undefined) {
        await conn.write(new TextEncoder().encode(reply));
        conn.close();
      }
    }
  })().catch(() => {});
  try {
    await fn();
  } finally {
    listener.close();
    for (const conn of held) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
    await serving;
  }
}

Deno.test("cni: garbled agent answers are code 999, silent agents time out with 11", async () => {
  await withFixture(async (f) => {
    const path = `${f.dir}/fake.sock`;
    const env = addEnv({ FLOCK_SOCKET: path });
    await withFakeAgent(path, "this is not json\n", async () => {
      expectError(await f.run(env, JSON.stringify(CONFIG)), 999, /invalid response/);
    });
    await withFakeAgent(path, '{"ok":"maybe"}\n', async () => {
      expectError(await f.run(env, JSON.stringify(CONFIG)), 999, /malformed/);
    });
    await withFakeAgent(path, "", async () => {
      expectError(await f.run(env, JSON.stringify(CONFIG)), 11, /without an answer/);
    });
    await withFakeAgent(path, undefined, async () => {
      const started = performance.now();
      const run = await f.run(env, JSON.stringify({ ...CONFIG, timeoutSeconds: 0.3 }));
      expectError(run, 11, /timed out/);
      assert.ok(performance.now() - started < 5000, "the timeout was honoured");
    });
  });
});

Deno.test("cni: log lines go to FLOCK_CNI_LOG or the config's logFile, never stdout", async () => {
  await withFixture(async (f) => {
    const envLog = `${f.dir}/env.log`;
    const run = await f.run(addEnv({ FLOCK_CNI_LOG: envLog }), JSON.stringify(CONFIG));
    assert.equal(run.code, 0);
    onlyJson(run);
    const failed = await f.run(
      addEnv({ FLOCK_CNI_LOG: envLog, CNI_CONTAINERID: "gone" }),
      JSON.stringify(CONFIG),
    );
    assert.equal(failed.code, 1);
    const lines = (await Deno.readTextFile(envLog)).trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    assert.equal(lines[0].command, "ADD");
    assert.equal(lines[0].containerId, "c0ffee");
    assert.equal(lines[0].level, "info");
    assert.equal(typeof lines[0].durationMs, "number");
    assert.equal(typeof lines[0].ts, "string");
    assert.equal(lines[1].level, "error");
    assert.equal(lines[1].code, 3);

    const configLog = `${f.dir}/config.log`;
    await f.run(
      addEnv({ FLOCK_CNI_LOG: envLog }),
      JSON.stringify({ ...CONFIG, logFile: configLog }),
    );
    assert.equal((await Deno.readTextFile(configLog)).trim().split("\n").length, 1);
    assert.equal((await Deno.readTextFile(envLog)).trim().split("\n").length, 2);

    // An unwritable log never fails the call.
    const broken = await f.run(
      addEnv({ FLOCK_CNI_LOG: `${f.dir}/no/such/dir/x.log` }),
      JSON.stringify(CONFIG),
    );
    assert.equal(broken.code, 0);
    onlyJson(broken);
  });
});

Deno.test("cni: a call refused before reaching the agent is logged to the config's logFile", async () => {
  await withFixture(async (f) => {
    const configLog = `${f.dir}/config.log`;
    const config = JSON.stringify({ ...CONFIG, logFile: configLog });
    expectError(await f.run(addEnv({ CNI_CONTAINERID: "bad id!" }), config), 4, /CONTAINERID/);
    expectError(
      await f.run(addEnv(), JSON.stringify({ ...CONFIG, cniVersion: "9.9.9", logFile: configLog })),
      1,
      /incompatible/,
    );
    const lines = (await Deno.readTextFile(configLog).catch(() => "")).trim().split("\n")
      .filter(Boolean).map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => [l.command, l.level, l.code]), [
      ["ADD", "error", 4],
      ["ADD", "error", 1],
    ]);
    assert.equal(f.requests.length, 0, "neither reached the agent");
  });
});

Deno.test("cni: exec round-trip latency of ADD (median of 20)", async () => {
  await withFixture(async (f) => {
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const started = performance.now();
      const run = await f.run(addEnv({ CNI_CONTAINERID: `c${i}` }), JSON.stringify(CONFIG));
      times.push(performance.now() - started);
      assert.equal(run.code, 0);
    }
    times.sort((a, b) => a - b);
    const median = (times[9] + times[10]) / 2;
    console.log(
      `plugin ADD exec round trip: median ${median.toFixed(1)} ms, max ${times[19].toFixed(1)} ms`,
    );
    assert.ok(median < 2000, `median ${median} ms`);
  });
});

Deno.test("cni: a stdin far larger than the agent takes is its code 6, not 11", async () => {
  await withFixture(async (f) => {
    // The agent stops reading at 16× its 1 MiB bound and answers; the plugin, still writing,
    // gets EPIPE. The agent's answer is waiting on the socket and is the one to print: "try
    // again later" would have the runtime retry a config that can never pass.
    const huge = JSON.stringify({ ...CONFIG, padding: "x".repeat(20 << 20) });
    expectError(await f.run(addEnv({ CNI_COMMAND: "DEL" }), huge), 6, /request too large/);
    assert.equal(f.requests.length, 0);
  });
});

Deno.test("cni: a timeoutSeconds beyond what a timer holds (~24.8 days) waits, not fails", async () => {
  await withFixture(async (f) => {
    // 2^31 ms and more overflow the timer, which then fires at once: every call "timed out".
    const config = JSON.stringify({ ...CONFIG, timeoutSeconds: 30 * 24 * 3600 });
    const run = await f.run(addEnv({ CNI_COMMAND: "DEL", CNI_CONTAINERID: "slow" }), config);
    assert.equal(run.code, 0, run.stdout);
    assert.equal(run.stdout, "");
  });
});
