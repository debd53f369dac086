import assert from "node:assert/strict";
import { CniError, type RpcRequest, type RpcResponse } from "./protocol.ts";
import { RpcServer, type RpcServerOptions, validateRpcRequest } from "./rpc_server.ts";
import { Prng } from "../tests/helpers/prng.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function request(command: RpcRequest["command"], containerId = "c1"): RpcRequest {
  return {
    command,
    containerId,
    netns: "/run/netns/x",
    ifname: "eth0",
    args: "",
    config: { cniVersion: "1.0.0", name: "flock" },
  };
}

/** Starts a server in a fresh temp dir (socket in a not-yet-existing subdirectory). */
async function withServer(
  handler: RpcServerOptions["handler"],
  fn: (path: string, server: RpcServer) => Promise<void>,
  extra: Partial<RpcServerOptions> = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-rpc-" });
  const path = `${dir}/run/flock.sock`;
  const logs: Record<string, unknown>[] = [];
  const server = new RpcServer({ path, handler, log: (f) => logs.push(f), ...extra });
  await server.start();
  try {
    await fn(path, server);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sends raw bytes, half-closes, and returns everything the server wrote. */
async function rawCall(path: string, data: Uint8Array | string): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    let offset = 0;
    while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
    await conn.closeWrite();
    return await new Response(conn.readable).text();
  } finally {
    try {
      conn.close();
    } catch { /* closed by the readable */ }
  }
}

async function call(path: string, req: unknown): Promise<RpcResponse> {
  const text = await rawCall(path, JSON.stringify(req) + "\n");
  assert.ok(text.endsWith("\n"), `response ends with a newline: ${JSON.stringify(text)}`);
  assert.equal(text.indexOf("\n"), text.length - 1, "exactly one line");
  return JSON.parse(text);
}

function errorCode(response: RpcResponse): number | undefined {
  return response.ok ? undefined : response.error.code;
}

const okHandler = (_req: RpcRequest): Promise<RpcResponse> => Promise.resolve({ ok: true });

Deno.test("RpcServer: creates a private dir and a 0600 socket, removes it on close", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-rpc-" });
  const path = `${dir}/a/b/flock.sock`;
  const server = new RpcServer({ path, handler: okHandler });
  await server.start();
  try {
    assert.equal((await Deno.stat(`${dir}/a/b`)).mode! & 0o777, 0o700);
    const st = await Deno.lstat(path);
    assert.ok(st.isSocket);
    assert.equal(st.mode! & 0o777, 0o600);
    assert.deepEqual(await call(path, request("STATUS")), { ok: true });
  } finally {
    await server.close();
  }
  await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("RpcServer: an existing directory keeps its mode", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-rpc-" });
  await Deno.chmod(dir, 0o755);
  const server = new RpcServer({ path: `${dir}/flock.sock`, handler: okHandler });
  await server.start();
  await server.close();
  assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o755);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("RpcServer: the socket is 0600 from the moment it listens, whatever the umask", async () => {
  // A connection made before a later chmod stays open after it: the socket must never be
  // connectable by others, not even between listen and chmod (a DaemonSet may run umask 0).
  const dir = await Deno.makeTempDir({ prefix: "flock-rpc-" });
  await Deno.chmod(dir, 0o755);
  const path = `${dir}/flock.sock`;
  const listen = Deno.listen;
  let modeWhenListening: number | undefined;
  const previousUmask = Deno.umask(0);
  // deno-lint-ignore no-explicit-any
  (Deno as any).listen = (opts: Deno.UnixListenOptions & { transport: "unix" }) => {
    const listener = listen(opts);
    modeWhenListening = Deno.lstatSync(opts.path).mode! & 0o777;
    return listener;
  };
  const server = new RpcServer({ path, handler: okHandler });
  try {
    await server.start();
  } finally {
    // deno-lint-ignore no-explicit-any
    (Deno as any).listen = listen;
    Deno.umask(previousUmask);
  }
  try {
    assert.equal(modeWhenListening, 0o600);
    assert.equal((await Deno.lstat(path)).mode! & 0o777, 0o600);
    assert.equal(Deno.umask(previousUmask), previousUmask, "the process umask is restored");
    assert.deepEqual(await call(path, request("STATUS")), { ok: true });
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RpcServer: replaces a stale socket, refuses a live one or a regular file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-rpc-" });
  const path = `${dir}/flock.sock`;
  await leaveStaleSocket(path);
  const server = new RpcServer({ path, handler: okHandler });
  await server.start();
  assert.deepEqual(await call(path, request("STATUS")), { ok: true });
  // A second agent on the same path must not steal the live socket.
  const second = new RpcServer({ path, handler: okHandler });
  await assert.rejects(second.start(), Deno.errors.AddrInUse);
  assert.deepEqual(await call(path, request("STATUS")), { ok: true });
  await server.close();
  await Deno.writeTextFile(path, "not a socket");
  await assert.rejects(new RpcServer({ path, handler: okHandler }).start(), /not a socket/);
  assert.equal(await Deno.readTextFile(path), "not a socket");
  await Deno.remove(dir, { recursive: true });
});

/** Leaves a socket file with no listener behind, as a SIGKILLed agent does. */
async function leaveStaleSocket(path: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `await Deno.listen({ transport: "unix", path: ${JSON.stringify(path)} }).accept();`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 200; i++) {
    if ((await Deno.lstat(path).catch(() => undefined))?.isSocket) break;
    await sleep(25);
  }
  child.kill("SIGKILL");
  await child.status;
  assert.ok((await Deno.lstat(path)).isSocket, "stale socket left behind");
}

/** A handler that records when each call ran and takes `ms` for ADD/DEL/CHECK/GC. */
function timedHandler(ms: number) {
  const spans: { label: string; start: number; end: number }[] = [];
  const handler = async (req: RpcRequest): Promise<RpcResponse> => {
    const start = performance.now();
    if (req.command !== "STATUS") await sleep(ms);
    spans.push({ label: `${req.command}:${req.containerId}`, start, end: performance.now() });
    return { ok: true };
  };
  const span = (label: string) => spans.find((s) => s.label === label)!;
  return { handler, spans, span };
}

Deno.test("RpcServer: requests for one container never overlap", async () => {
  const t = timedHandler(150);
  await withServer(t.handler, async (path) => {
    const responses = await Promise.all([
      call(path, request("ADD", "c1")),
      call(path, request("DEL", "c1")),
    ]);
    assert.deepEqual(responses, [{ ok: true }, { ok: true }]);
  });
  const [first, second] = [...t.spans].sort((a, b) => a.start - b.start);
  assert.ok(second.start >= first.end, `overlap: ${JSON.stringify(t.spans)}`);
});

Deno.test("RpcServer: different containers run concurrently", async () => {
  const t = timedHandler(150);
  await withServer(t.handler, async (path) => {
    await Promise.all([call(path, request("ADD", "c1")), call(path, request("ADD", "c2"))]);
  });
  const [a, b] = [t.span("ADD:c1"), t.span("ADD:c2")];
  assert.ok(a.start < b.end && b.start < a.end, `no overlap: ${JSON.stringify(t.spans)}`);
});

Deno.test("RpcServer: GC waits for in-flight requests, holds new ones, STATUS passes", async () => {
  const t = timedHandler(150);
  await withServer(t.handler, async (path) => {
    const add1 = call(path, request("ADD", "c1"));
    await sleep(30);
    const gc = call(path, { ...request("GC", ""), netns: "", ifname: "" });
    await sleep(30);
    const add2 = call(path, request("ADD", "c2"));
    await sleep(30);
    assert.deepEqual(await call(path, request("STATUS", "")), { ok: true });
    await Promise.all([add1, gc, add2]);
  });
  const [add1, gc, add2] = [t.span("ADD:c1"), t.span("GC:"), t.span("ADD:c2")];
  assert.ok(gc.start >= add1.end, "GC overlapped the ADD before it");
  assert.ok(add2.start >= gc.end, "an ADD ran during GC");
  assert.ok(t.span("STATUS:").start < gc.end, "STATUS waited for GC");
});

Deno.test("RpcServer: work held after the answer holds its container and exclusive, not GC", async () => {
  const events: string[] = [];
  let finishHeld!: () => void;
  const handler: RpcServerOptions["handler"] = (req, hold) => {
    events.push(`${req.command}:${req.containerId}`);
    if (req.command === "DEL") {
      hold(new Promise<void>((resolve) => finishHeld = resolve).then(() => events.push("held")));
    }
    return Promise.resolve({ ok: true });
  };
  await withServer(handler, async (path, server) => {
    // The DEL answers while its held work is still running.
    assert.deepEqual(await call(path, request("DEL", "c1")), { ok: true });
    const readd = call(path, request("ADD", "c1"));
    // GC runs at once (its handler leaves the attachment whose held work runs alone).
    assert.deepEqual(await call(path, { ...request("GC", ""), netns: "", ifname: "" }), {
      ok: true,
    });
    const exclusive = server.exclusive(() => Promise.resolve(events.push("exclusive")));
    assert.deepEqual(await call(path, request("STATUS", "")), { ok: true });
    await sleep(50);
    assert.deepEqual(events, ["DEL:c1", "GC:", "STATUS:"], "ADD and exclusive wait for it");
    finishHeld();
    await Promise.all([readd, exclusive]);
    assert.equal(events[3], "held");
    assert.deepEqual(events.slice(4).sort(), ["ADD:c1", "exclusive"]);
  });
});

Deno.test("RpcServer: a held work that fails does not wedge the container", async () => {
  const handler: RpcServerOptions["handler"] = (req, hold) => {
    if (req.command === "DEL") hold(Promise.reject(new Error("veth deletion failed")));
    return Promise.resolve({ ok: true });
  };
  await withServer(handler, async (path) => {
    assert.deepEqual(await call(path, request("DEL", "c1")), { ok: true });
    assert.deepEqual(await call(path, request("ADD", "c1")), { ok: true });
  });
});

Deno.test("RpcServer: malformed requests get a well-formed error", async () => {
  let calls = 0;
  const handler = () => (calls++, Promise.resolve({ ok: true } as RpcResponse));
  await withServer(handler, async (path) => {
    const cases: [string | Uint8Array, number][] = [
      ["hello\n", 6],
      ["{\n", 6],
      ["[]\n", 6],
      ["null\n", 6],
      ['{"command":"FROB","config":{}}\n', 4],
      ['{"command":"VERSION","config":{}}\n', 4],
      ['{"command":5,"config":{}}\n', 6],
      ['{"command":"ADD","config":[]}\n', 6],
      ['{"command":"ADD"}\n', 6],
      ['{"command":"ADD","containerId":7,"config":{}}\n', 6],
      [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d, 0x0a]), 6],
    ];
    for (const [input, code] of cases) {
      const text = await rawCall(path, input);
      const response = JSON.parse(text) as RpcResponse;
      assert.equal(errorCode(response), code, `input ${JSON.stringify(String(input))}`);
    }
    // A request without the trailing newline, ended by EOF, is still served.
    assert.deepEqual(JSON.parse(await rawCall(path, JSON.stringify(request("ADD")))), { ok: true });
  });
  assert.equal(calls, 1);
});

Deno.test("RpcServer: oversized requests are refused after being drained", async () => {
  let calls = 0;
  const handler = () => (calls++, Promise.resolve({ ok: true } as RpcResponse));
  await withServer(handler, async (path) => {
    const big = { ...request("ADD"), config: { pad: "x".repeat(10_000) } };
    for (const tail of ["\n", ""]) {
      const response = JSON.parse(await rawCall(path, JSON.stringify(big) + tail));
      assert.equal(errorCode(response), 6);
      assert.match(response.error.msg, /too large/);
    }
    // Exactly at the bound is fine.
    const fits = { ...request("ADD"), config: { pad: "" } };
    const size = JSON.stringify(fits).length;
    fits.config.pad = "y".repeat(4096 - size);
    assert.deepEqual(await call(path, fits), { ok: true });
  }, { maxRequestBytes: 4096 });
  assert.equal(calls, 1);
});

Deno.test("RpcServer: handler errors become CNI errors", async () => {
  const handler = (req: RpcRequest): Promise<RpcResponse> => {
    switch (req.containerId) {
      case "cni":
        throw new CniError(3, "no such container", "c");
      case "plain":
        return Promise.reject(new TypeError("boom"));
      case "garbage":
        return Promise.resolve("nope" as unknown as RpcResponse);
      case "bigint":
        return Promise.resolve({ ok: true, result: { n: 1n } });
      default:
        return Promise.resolve({ ok: false, error: { code: 7, msg: "bad" } });
    }
  };
  await withServer(handler, async (path) => {
    assert.deepEqual(await call(path, request("ADD", "cni")), {
      ok: false,
      error: { code: 3, msg: "no such container", details: "c" },
    });
    const plain = await call(path, request("ADD", "plain"));
    assert.equal(errorCode(plain), 999);
    assert.match((plain as { error: { msg: string } }).error.msg, /TypeError: boom/);
    assert.equal(errorCode(await call(path, request("ADD", "garbage"))), 999);
    assert.equal(errorCode(await call(path, request("ADD", "bigint"))), 999);
    assert.deepEqual(await call(path, request("ADD", "other")), {
      ok: false,
      error: { code: 7, msg: "bad" },
    });
  });
});

Deno.test("RpcServer: a client hanging up early does not hurt the server", async () => {
  let finished = 0;
  const handler = async (req: RpcRequest): Promise<RpcResponse> => {
    if (req.containerId.startsWith("slow")) await sleep(100);
    finished++;
    return { ok: true, result: { x: "y".repeat(200_000) } };
  };
  await withServer(handler, async (path) => {
    for (let i = 0; i < 5; i++) {
      const conn = await Deno.connect({ transport: "unix", path });
      await conn.write(new TextEncoder().encode(JSON.stringify(request("ADD", `slow${i}`)) + "\n"));
      conn.close();
    }
    // Connected, sent nothing, left.
    (await Deno.connect({ transport: "unix", path })).close();
    await sleep(250);
    assert.equal(finished, 5, "handlers still ran to completion");
    const response = await call(path, request("ADD", "fast"));
    assert.equal(response.ok, true);
  });
});

Deno.test("RpcServer: a silent client gets a timeout error", async () => {
  await withServer(okHandler, async (path) => {
    const conn = await Deno.connect({ transport: "unix", path });
    const text = await new Response(conn.readable).text();
    const response = JSON.parse(text);
    assert.equal(errorCode(response), 6);
    assert.match(response.error.msg, /timed out/);
  }, { readTimeoutMs: 100 });
});

Deno.test("RpcServer: close lets in-flight requests answer, refuses idle clients", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-rpc-" });
  const path = `${dir}/flock.sock`;
  const server = new RpcServer({
    path,
    handler: async () => (await sleep(150), { ok: true }),
  });
  await server.start();
  const inFlight = call(path, request("ADD"));
  const idle = await Deno.connect({ transport: "unix", path });
  await sleep(30);
  await server.close();
  assert.deepEqual(await inFlight, { ok: true });
  const idleAnswer = JSON.parse(await new Response(idle.readable).text());
  assert.equal(errorCode(idleAnswer), 11);
  await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
  await assert.rejects(Deno.connect({ transport: "unix", path }));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("validateRpcRequest: defaults absent strings, keeps config", () => {
  assert.deepEqual(validateRpcRequest({ command: "STATUS", config: { a: 1 } }), {
    command: "STATUS",
    containerId: "",
    netns: "",
    ifname: "",
    args: "",
    config: { a: 1 },
  });
});

Deno.test("RpcServer fuzz: 1,000 random inputs, always one well-formed answer", async () => {
  const r = new Prng(0x5eed);
  await withServer(okHandler, async (path) => {
    for (let i = 0; i < 1000; i++) {
      let input: Uint8Array | string;
      const pick = r.next();
      if (pick < 0.4) {
        input = r.bytes(r.int(300));
      } else if (pick < 0.8) {
        input = JSON.stringify(r.json(3, RPC_WORDS)) + (r.chance(0.8) ? "\n" : "");
      } else {
        const req: Record<string, unknown> = { ...request("ADD", `c${i}`) };
        const key = ["command", "containerId", "netns", "ifname", "args", "config"][i % 6];
        req[key] = r.json(2, RPC_WORDS);
        input = JSON.stringify(req) + "\n";
      }
      const text = await rawCall(path, input);
      if (text === "") {
        // Only an empty request (EOF before any byte) gets no answer.
        assert.equal(input.length, 0, `no answer for input ${i}`);
        continue;
      }
      const response = JSON.parse(text);
      assert.equal(typeof response.ok, "boolean", text);
      if (!response.ok) {
        assert.equal(typeof response.error.code, "number");
        assert.equal(typeof response.error.msg, "string");
      }
    }
  });
});

/** Field and command names of the protocol, so random values look like requests more often. */
const RPC_WORDS = [
  ...["command", "config", "containerId", "netns", "ifname", "args"],
  ...["ADD", "DEL", "GC", "STATUS", "x"],
];

Deno.test("RpcServer: onIdle runs once after a burst, and never while a request runs", async () => {
  let idleCalls = 0;
  let running = 0;
  let idleWhileRunning = false;
  const handler = async (_req: RpcRequest): Promise<RpcResponse> => {
    running++;
    await sleep(120);
    running--;
    return { ok: true };
  };
  const onIdle = () => {
    idleCalls++;
    if (running > 0) idleWhileRunning = true;
  };
  await withServer(handler, async (path) => {
    await sleep(80);
    assert.equal(idleCalls, 0, "no idle call before any request");
    await Promise.all(["c1", "c2", "c3"].map((id) => call(path, request("ADD", id))));
    // A second request arrives within the quiet time: the timer restarts.
    await sleep(20);
    await call(path, request("ADD", "c4"));
    assert.equal(idleCalls, 0, "the quiet time has not passed yet");
    await sleep(500);
    assert.equal(idleCalls, 1);
    assert.equal(idleWhileRunning, false);
  }, { onIdle, idleMs: 300 });
});
