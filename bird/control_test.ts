/**
 * BirdControl against a real BIRD in a test namespace (reload, coalescing, skip-unchanged, a
 * rejected config keeping the old one), plus the parsers of birdc's replies.
 */

import assert from "node:assert/strict";
import {
  BirdControl,
  type BirdReloadStatus,
  parseConfigureReply,
  parseOfflineCheck,
  parseShowProtocols,
} from "./control.ts";
import {
  birdConfigWithPeer as configWithPeer,
  smallBirdConfig as config,
} from "../tests/helpers/bird_configs.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { BirdDaemon, bootstrapBirdConfig } from "../tests/helpers/bird.ts";
import { eventually } from "../tests/helpers/eventually.ts";

const SHOW_PROTOCOLS_ALL = `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2024-05-01 10:00:00
kernel6    Kernel     master6    up     2024-05-01 10:00:00
peer_10_0_0_1 BGP        ---        up     2024-05-01 10:00:05  Established
  BGP state:          Established
    Neighbor address: 10.0.0.1
    Neighbor AS:      65000
    Local AS:         65001
  Channel ipv6
    State:          UP
peer_fd00_a__2 BGP        ---        start  2024-05-01 10:00:00  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: fd00:a::2
    Neighbor AS:      65000
    Local AS:         65001
`;

Deno.test("parseShowProtocols: BGP sessions with state, neighbour and uptime", () => {
  const now = new Date(2024, 4, 1, 10, 1, 5);
  const s = parseShowProtocols(SHOW_PROTOCOLS_ALL, now);
  assert.equal(s.length, 2);
  assert.deepEqual(
    { ...s[0], since: undefined },
    {
      name: "peer_10_0_0_1",
      state: "up",
      bgpState: "Established",
      established: true,
      neighborAddress: "10.0.0.1",
      neighborAs: 65000,
      localAs: 65001,
      since: undefined,
      uptimeSeconds: 60,
      info: "Established",
    },
  );
  assert.equal(s[1].established, false);
  assert.equal(s[1].bgpState, "Active");
  assert.equal(s[1].info, "Active Socket: Connection refused");
  assert.equal(s[1].neighborAddress, "fd00:a::2");
});

Deno.test("parseConfigureReply: success, syntax error, unreachable", () => {
  // `birdc -v` output, as BIRD 2.0.12 gives it.
  const ok = parseConfigureReply(
    0,
    "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /x\n0003 Reconfigured",
  );
  assert.deepEqual(ok, {
    ok: true,
    rejected: false,
    unreachable: false,
    timedOut: false,
    replyCode: 3,
    message: "Reconfigured",
  });
  const bad = parseConfigureReply(
    1,
    "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /x\n" +
      "8002 /x:2:19 syntax error, unexpected '}'",
  );
  assert.equal(bad.ok, false);
  assert.equal(bad.rejected, true, "a fault at a place in the file is a verdict");
  assert.equal(bad.message, "/x:2:19 syntax error, unexpected '}'");
  const down = parseConfigureReply(
    1,
    "Unable to connect to server control socket (/x.ctl): No such file or directory",
  );
  assert.equal(down.unreachable, true);
  assert.equal(down.ok, false);
  assert.equal(down.rejected, false);
  // birdc killed while BIRD was busy: not a verdict on the config.
  const slow = parseConfigureReply(
    143,
    "0001 BIRD 2.0.12 ready.\n[timed out after 10000 ms]",
    true,
  );
  assert.equal(slow.ok, false);
  assert.equal(slow.rejected, false);
  assert.equal(slow.timedOut, true);
});

Deno.test("parseConfigureReply: replies that are no verdict on the text are not rejections", () => {
  const answers = [
    // BIRD shutting down (sysdep/unix/main.c, cmd_reconfig_msg: CONF_SHUTDOWN).
    [
      0,
      "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /x\n" +
      "0006 Reconfiguration ignored, shutting down",
    ],
    // BIRD gone mid-reply (birdc's own errors, no reply code).
    [
      1,
      "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /x\n" +
      "Server read error: Connection reset by peer",
    ],
    [1, "0001 BIRD 2.0.12 ready.\nConnection closed by server"],
    // The file could not be opened: 8002 without a place in the file.
    [
      1,
      "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /x\n" +
      "8002 /x: No such file or directory",
    ],
    // A command BIRD could not parse, or a restricted CLI: the text was never read.
    [1, "0001 BIRD 2.0.12 ready.\n9001 syntax error, unexpected CF_SYM_UNDEFINED"],
    [0, "0001 BIRD 2.0.12 ready.\n0016 Access restricted"],
  ] as const;
  for (const [code, text] of answers) {
    const r = parseConfigureReply(code, text);
    assert.deepEqual([r.ok, r.rejected, r.unreachable], [false, false, false], text);
    assert.doesNotMatch(r.message, /BIRD 2\.0\.12 ready|Reading configuration/);
  }
  // Taken: in progress, or queued behind a reload in progress, is BIRD's to finish.
  for (
    const taken of [
      "0004 Reconfiguration in progress",
      "0005 Reconfiguration already in " +
      "progress, queueing new config",
      "0020 Configuration OK",
    ]
  ) {
    const r = parseConfigureReply(0, `0001 BIRD 2.0.12 ready.\n${taken}`);
    assert.equal(r.ok, true, taken);
    assert.equal(r.message, taken.slice(5));
  }
});

Deno.test("parseOfflineCheck: a fault at a place in the file is a verdict, bird not running is not", () => {
  const bad = { code: 1, text: "bird: /x.new:1:19 syntax error, unexpected CF_SYM_UNDEFINED" };
  assert.deepEqual(parseOfflineCheck(bad), { ok: false, rejected: true });
  assert.deepEqual(parseOfflineCheck({ code: 0, text: "" }), { ok: true, rejected: false });
  const missing = { code: 127, text: "cannot run /nonexistent/bird: No such file or directory" };
  assert.deepEqual(parseOfflineCheck(missing), { ok: false, rejected: false });
  const killed = { code: 143, text: "[timed out after 10000 ms]", timedOut: true };
  assert.deepEqual(parseOfflineCheck(killed), { ok: false, rejected: false });
});

Deno.test({
  name: "BirdControl: reloads a real BIRD, coalesces, skips unchanged, keeps the last good config",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-birdctl");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const control = new BirdControl({
      ...bird.controlOptions(),
      coalesceMs: 30,
    });
    try {
      // A burst of five updates: one reload, with the last text.
      const results = await Promise.all(
        [1, 2, 3, 4, 5].map((i) => control.update(config(`fd00:${i}::/64`))),
      );
      assert.equal(results[4].result, "ok");
      assert.equal(control.status.reloads, 1);
      assert.match(await Deno.readTextFile(bird.configPath), /fd00:5::\/64/);
      const shown = await bird.birdc(["show", "protocols"]);
      assert.match(shown.stdout, /kernel6/);

      // The same text again: no reload.
      await control.update(config("fd00:5::/64"));
      assert.equal(control.status.reloads, 1);
      assert.equal(control.status.unchanged, 1);

      // A config BIRD rejects: the old one stays live and on disk; the error is reported.
      const bad = config("fd00:6::/64").replace("protocol device {", "protocol device { foo;");
      const s = await control.update(bad);
      assert.equal(s.result, "rejected");
      assert.match(s.error ?? "", /syntax error/);
      assert.match(await Deno.readTextFile(bird.configPath), /fd00:5::\/64/);
      assert.match(await Deno.readTextFile(`${bird.configPath}.rejected`), /foo;/);
      assert.equal((await bird.birdc(["show", "status"])).code, 0, "BIRD still runs");
      assert.match((await bird.birdc(["show", "protocols"])).stdout, /kernel6/);

      // A good one afterwards is applied.
      const fixed = await control.update(config("fd00:7::/64"));
      assert.equal(fixed.result, "ok");
      assert.equal(control.status.reloads, 2);

      // BIRD gone: the config is checked offline and written for its next start.
      await bird.kill("SIGKILL");
      const down = await control.update(config("fd00:8::/64"));
      assert.equal(down.result, "unreachable");
      assert.match(await Deno.readTextFile(bird.configPath), /fd00:8::\/64/);
      await bird.launch();
      assert.match((await bird.birdc(["show", "route"])).stdout, /BIRD/);
    } finally {
      await control.close();
    }
  },
});

Deno.test("BirdControl: a config file it cannot write is a reported failure, not a crash", async () => {
  // e.g. the shared bird directory not mounted, or a full disk: the agent must keep serving CNI.
  const dir = await Deno.makeTempDir({ prefix: "flk-birdctl-" });
  const control = new BirdControl({
    configPath: `${dir}/missing/bird.conf`,
    socketPath: `${dir}/missing/bird.ctl`,
    birdcPath: "/nonexistent/birdc",
    birdPath: "/nonexistent/bird",
    coalesceMs: 1,
    retryMs: 60_000,
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const status = await Promise.race([
      control.update(config("fd00:1::/64")),
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 5_000)),
    ]);
    assert.ok(status, "update() settles");
    assert.notEqual(status.result, "ok");
    assert.match(status.error ?? "", /bird\.conf/);
    assert.equal(control.status.result, status.result);
  } finally {
    clearTimeout(timer);
    await control.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "BirdControl: a reload BIRD does not answer in time is failed and retried until it runs",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-birdslow");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const attempts: BirdReloadStatus[] = [];
    const control = new BirdControl({
      ...bird.controlOptions(),
      coalesceMs: 10,
      commandTimeoutMs: 500,
      retryMs: 200,
      onAttempt: (s) => attempts.push(s),
    });
    const withPeer = configWithPeer();
    try {
      assert.equal((await control.update(config("fd00:1::/64"))).result, "ok");

      // BIRD stopped (as a BIRD busy for longer than the bound): birdc gets no answer.
      bird.signal("SIGSTOP");
      try {
        const s = await control.update(withPeer);
        assert.equal(s.result, "failed", "a timeout is no rejection");
        assert.match(s.error ?? "", /did not answer 'configure check' within 500 ms/);
        assert.match(s.error ?? "", /retrying/);
        await assert.rejects(Deno.stat(`${bird.configPath}.rejected`), Deno.errors.NotFound);
        // Retried while BIRD stays stopped, reported as failed each time.
        const deadline = Date.now() + 10_000;
        while (attempts.length < 4 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.ok(attempts.length >= 4, `retries: ${JSON.stringify(attempts)}`);
        assert.ok(attempts.slice(1).every((a) => a.result === "failed"));
      } finally {
        bird.signal("SIGCONT");
      }

      // BIRD back: the retry applies the config without any further update().
      const deadline = Date.now() + 15_000;
      while (control.status.result !== "ok" && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(control.status.result, "ok", JSON.stringify(control.status));
      assert.equal(control.status.error, undefined);
      assert.equal(attempts.at(-1)?.result, "ok", "the retry's outcome is reported");
      assert.match(await Deno.readTextFile(bird.configPath), /fd00:9::1/);
      assert.match((await bird.birdc(["show", "protocols"])).stdout, /^peer_\S+\s+BGP/m);
    } finally {
      await control.close();
    }
  },
});

Deno.test({
  name: "BirdControl: BIRD killed and restarted on a stale bird.conf gets the wanted config again",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-birdrst");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const attempts: BirdReloadStatus[] = [];
    const control = new BirdControl({
      ...bird.controlOptions(),
      coalesceMs: 10,
      retryMs: 200,
      watchMs: 100,
      onAttempt: (s) => attempts.push({ ...s }),
    });
    const wanted = configWithPeer();
    // Longer than one birdc's own 10 s bound: on a loaded machine a reload (configure check,
    // then configure) can take that long, and a 10 s wait could not tell slow from never.
    const waitUntil = (what: string, check: () => boolean | Promise<boolean>) =>
      eventually(what, async () => ({ ok: await check(), attempts }), (v) => v.ok, 30_000, 50);
    const runsWanted = async () =>
      /^peer_\S+\s+BGP/m.test((await bird.birdc(["show", "protocols"])).stdout);
    try {
      assert.equal((await control.update(wanted)).result, "ok");
      assert.ok(await runsWanted());

      // Down: reported unreachable, and the wanted config is what a start would read.
      await bird.kill("SIGKILL");
      await waitUntil("reported down", () => control.status.result === "unreachable");
      assert.equal(attempts.at(-1)?.result, "unreachable");
      // Restarted on a stale file (e.g. its shared bird.conf replaced while it was down).
      await Deno.writeTextFile(bird.configPath, bootstrapBirdConfig("10.9.9.9"));
      await bird.launch({ recover: true });
      await waitUntil(
        "the wanted config applied again",
        async () => control.status.result === "ok" && await runsWanted(),
      );
      assert.equal(await Deno.readTextFile(bird.configPath), wanted);

      // Restarted between two checks, on a stale file: noticed by its new control socket.
      const reloads = control.status.reloads;
      await bird.kill("SIGKILL");
      await Deno.writeTextFile(bird.configPath, bootstrapBirdConfig("10.9.9.9"));
      await bird.launch({ recover: true });
      await waitUntil(
        "re-applied after a quick restart",
        async () => control.status.reloads > reloads && await runsWanted(),
      );

      // A BIRD that keeps running is left alone: no reload without a change.
      const settled = control.status.reloads;
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(control.status.reloads, settled);
    } finally {
      await control.close();
    }
  },
});

Deno.test({
  name:
    "BirdControl: an outage (BIRD stopped, then killed) logs its start, not every retry, and its end",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-birdquiet");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const logs: Record<string, unknown>[] = [];
    const control = new BirdControl({
      ...bird.controlOptions(),
      coalesceMs: 10,
      commandTimeoutMs: 300,
      // No backoff: this counts retries (the backoff has its own test, control_backoff_test).
      retryMs: 100,
      retryMaxMs: 100,
      log: (f) => logs.push(f),
    });
    const attempts = () => control.status.lastAttempt;
    const result = () => control.status.result;
    /** Waits until `n` more reload attempts finished (retries while BIRD stays down). */
    const retries = async (n: number) => {
      for (let seen = 0, last = attempts(), i = 0; seen < n && i < 300; i++) {
        await new Promise((r) => setTimeout(r, 50));
        if (attempts() !== last) [seen, last] = [seen + 1, attempts()];
      }
    };
    const outageLines = () =>
      logs.filter((l) => l.msg !== "bird reconfigured").map((l) => String(l.msg));
    try {
      assert.equal((await control.update(config("fd00:1::/64"))).result, "ok");

      // Stopped: every retry times out; one line says so, not one per retry.
      bird.signal("SIGSTOP");
      try {
        assert.equal((await control.update(config("fd00:2::/64"))).result, "failed");
        await retries(5);
      } finally {
        bird.signal("SIGCONT");
      }
      // Killed: the config is written for its start at every retry; the change is logged once.
      await bird.kill("SIGKILL");
      await retries(8);
      assert.equal(result(), "unreachable");
      const during = outageLines();
      assert.equal(during.length, 2, `lines during the outage: ${JSON.stringify(logs)}`);
      assert.match(during[0], /bird reload failed/);
      assert.match(String(logs.find((l) => l.msg === during[0])?.error), /did not answer/);
      assert.match(during[1], /still failing, now: bird not reachable; config written/);

      // Back: the retry applies the config, and the end of the outage is logged once.
      await bird.launch();
      for (let i = 0; i < 200 && result() !== "ok"; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(control.status.result, "ok", JSON.stringify(control.status));
      const recovered = logs.filter((l) => /recovered/.test(String(l.msg)));
      assert.equal(recovered.length, 1, JSON.stringify(logs));
      assert.ok(Number(recovered[0].failures) >= 13, JSON.stringify(recovered));
      assert.equal(outageLines().length, during.length + 1, JSON.stringify(logs));
    } finally {
      await control.close();
    }
  },
});
