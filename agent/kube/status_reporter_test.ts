import assert from "node:assert/strict";
import {
  buildStatus,
  type Condition,
  conditionTime,
  countersIntervalMs,
  keepTransitionTimes,
  type NodeConfigStatus,
  type NodeConfigStatusPatch,
  ownedStatusText,
  STATUS_COUNTER_WRITES_PER_SECOND,
  STATUS_COUNTERS_INTERVAL_MS,
  statusMergePatch,
  StatusReporter,
  type StatusReporterOptions,
} from "./status_reporter.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function status(attachments: number): NodeConfigStatus {
  return buildStatus(
    { ready: true, attachments, ipv6: attachments, ipv4: 0 },
    1,
    "",
  );
}

/** A reporter for NodeConfig `n1` whose status is `current()`; its patches land in `sent`. */
function recordingReporter(
  current: () => NodeConfigStatus,
  options: Omit<StatusReporterOptions, "compute" | "patch" | "log">,
): { reporter: StatusReporter; sent: NodeConfigStatusPatch[] } {
  const sent: NodeConfigStatusPatch[] = [];
  const reporter = new StatusReporter({
    compute: () => Promise.resolve({ name: "n1", status: current() }),
    patch: (_name, s) => {
      sent.push(s);
      return Promise.resolve();
    },
    log: () => {},
    ...options,
  });
  return { reporter, sent };
}

Deno.test("buildStatus: the shape written to NodeConfig.status", () => {
  assert.deepEqual(
    buildStatus(
      { ready: false, attachments: 3, ipv6: 3, ipv4: 2 },
      7,
      "waiting for NodeConfig n1",
      undefined,
      { reason: "WaitingForConfig", now: new Date("2026-01-02T03:04:05.678Z") },
    ),
    {
      ready: false,
      reason: "waiting for NodeConfig n1",
      observedGeneration: 7,
      pods: 3,
      allocated: { ipv6: 3, ipv4: 2 },
      conditions: [{
        type: "Ready",
        status: "False",
        reason: "WaitingForConfig",
        message: "waiting for NodeConfig n1",
        lastTransitionTime: "2026-01-02T03:04:05Z",
        observedGeneration: 7,
      }],
    },
  );
});

Deno.test("buildStatus: BGP sessions and the last BIRD reload when the agent drives BIRD", () => {
  const s = buildStatus({ ready: true, attachments: 0, ipv6: 0, ipv4: 0 }, 2, "", {
    sessions: 3,
    sessionsUp: 2,
    lastReload: { time: "2026-01-01T00:00:00.000Z", ok: true },
  });
  assert.equal(s.bgpSessionsUp, 2);
  assert.equal(s.bgpSessions, 3);
  assert.deepEqual(s.lastBirdReload, { time: "2026-01-01T00:00:00.000Z", ok: true });
  assert.deepEqual(s.conditions.map((c) => [c.type, c.status, c.reason, c.message]), [
    ["Ready", "True", "Serving", "serving CNI requests"],
    ["BGPEstablished", "False", "SessionsNotEstablished", "2 of 3 BGP sessions established"],
  ]);
});

Deno.test("buildStatus: BGPEstablished is true only when every configured session is up", () => {
  const bgp = (routing: Parameters<typeof buildStatus>[3]) =>
    buildStatus({ ready: true, attachments: 0, ipv6: 0, ipv4: 0 }, 1, "", routing)
      .conditions.find((c) => c.type === "BGPEstablished");
  assert.deepEqual(
    [bgp({ sessions: 2, sessionsUp: 2 })?.status, bgp({ sessions: 2, sessionsUp: 2 })?.reason],
    ["True", "AllSessionsEstablished"],
  );
  const none = bgp({ sessions: 0, sessionsUp: 0 });
  assert.deepEqual([none?.status, none?.reason], ["False", "NoSessions"]);
  const failed = bgp({
    sessions: 1,
    sessionsUp: 1,
    lastReload: { time: "2026-01-01T00:00:00.000Z", ok: false, message: "rejected: syntax" },
  });
  assert.equal(failed?.status, "True");
  assert.match(failed!.message, /the last BIRD reload failed: rejected: syntax/);
  assert.equal(bgp(undefined), undefined, "no BGPEstablished without BIRD");
  const noIpv6 = bgp({ sessions: 1, sessionsUp: 1, peersWithoutIpv6: ["10.0.0.1"] });
  assert.equal(noIpv6?.status, "True");
  assert.equal(
    noIpv6?.message,
    "1 of 1 BGP sessions established; no IPv6 routes to 10.0.0.1 (the node has no global " +
      "IPv6 address to give as their next hop)",
  );
  const noLink = bgp({ sessions: 1, sessionsUp: 0, peersWithoutIpv4Link: ["10.0.0.1"] });
  assert.equal(
    noLink?.message,
    "0 of 1 BGP sessions established; no IPv4 link to 10.0.0.1 (no interface has an IPv4 " +
      "address in their subnet)",
  );
  const noAddress = bgp({ sessions: 1, sessionsUp: 0, peersWithoutIpv4Address: ["10.1.0.2"] });
  assert.equal(
    noAddress?.message,
    "0 of 1 BGP sessions established; no IPv4 address for 10.1.0.2 (the node has no IPv4 " +
      "address to reach these multihop peers from)",
  );
});

Deno.test("keepTransitionTimes: the time moves only when a condition's status flips", () => {
  const at = (iso: string, ready: boolean, up: number) =>
    buildStatus({ ready, attachments: 0, ipv6: 0, ipv4: 0 }, 1, ready ? "" : "waiting", {
      sessions: 2,
      sessionsUp: up,
    }, { now: new Date(iso) });
  const first = at("2026-01-01T00:00:00Z", false, 0);
  const second = keepTransitionTimes(at("2026-01-01T00:00:10Z", true, 0), first.conditions);
  const times = (s: NodeConfigStatus) =>
    s.conditions.map((c) => `${c.type}@${c.lastTransitionTime}`);
  assert.deepEqual(times(second), [
    "Ready@2026-01-01T00:00:10Z", // flipped to True
    "BGPEstablished@2026-01-01T00:00:00Z", // still False: a new message would not move it
  ]);
  const third = keepTransitionTimes(at("2026-01-01T00:00:20Z", true, 2), second.conditions);
  assert.deepEqual(times(third), [
    "Ready@2026-01-01T00:00:10Z",
    "BGPEstablished@2026-01-01T00:00:20Z",
  ]);
  // Nothing known from before (first write): the computed times stand.
  assert.deepEqual(keepTransitionTimes(third, undefined), third);
  assert.equal(conditionTime(new Date("2026-05-06T07:08:09.999Z")), "2026-05-06T07:08:09Z");
});

Deno.test("StatusReporter: condition times survive restarts (from the API's status) and recomputes", async () => {
  const sent: NodeConfigStatusPatch[] = [];
  let ready = true;
  const onApi: { conditions: Condition[] } = {
    conditions: [{
      type: "Ready",
      status: "True",
      reason: "Serving",
      message: "serving CNI requests",
      lastTransitionTime: "2025-06-01T00:00:00Z",
    }],
  };
  const reporter = new StatusReporter({
    compute: () =>
      Promise.resolve({
        name: "n1",
        status: buildStatus({ ready, attachments: sent.length, ipv6: 0, ipv4: 0 }, 1, ""),
        current: onApi,
      }),
    patch: (_name, s) => {
      sent.push(s);
      return Promise.resolve();
    },
    minIntervalMs: 10,
    log: () => {},
  });
  const readyTime = (s: NodeConfigStatusPatch) =>
    s.conditions?.find((c) => c.type === "Ready")?.lastTransitionTime;
  const waitSent = async (n: number) => {
    for (let i = 0; i < 100 && sent.length < n; i++) await sleep(10);
    assert.equal(sent.length, n);
  };
  try {
    reporter.request();
    await waitSent(1);
    assert.equal(readyTime(sent[0]), "2025-06-01T00:00:00Z", "kept from the API's status");
    reporter.request(); // pods changed (sent.length is the pod count): written, time kept
    await waitSent(2);
    assert.equal(readyTime(sent[1]), "2025-06-01T00:00:00Z");
    ready = false;
    reporter.request();
    await waitSent(3);
    assert.notEqual(readyTime(sent[2]), "2025-06-01T00:00:00Z", "a flip moves the time");
  } finally {
    reporter.stop();
  }
});

Deno.test("StatusReporter: a burst becomes one patch per interval, with the latest status", async () => {
  let count = 0;
  const { reporter, sent } = recordingReporter(() => status(count), { minIntervalMs: 100 });
  try {
    for (let i = 0; i < 50; i++) {
      count++;
      reporter.request();
    }
    await sleep(30);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].pods, 50);
    // A second burst inside the interval waits it out and is sent once, with its final count.
    for (let i = 0; i < 20; i++) {
      count++;
      reporter.request();
    }
    assert.equal(sent.length, 1);
    for (let i = 0; i < 100 && sent.length < 2; i++) await sleep(10);
    await sleep(150);
    assert.equal(sent.length, 2);
    assert.equal(sent[1].pods, 70);
    reporter.request();
    await sleep(150);
    assert.equal(sent.length, 2, "an unchanged status is not written again");
    reporter.observe({ ...status(70), pods: 0 });
    await sleep(150);
    assert.equal(sent.length, 3, "a status someone else changed is written again");
  } finally {
    reporter.stop();
  }
});

Deno.test("StatusReporter: a failed patch is retried until it goes through", async () => {
  let failuresLeft = 2;
  let patches = 0;
  const logs: Record<string, unknown>[] = [];
  const reporter = new StatusReporter({
    compute: () => Promise.resolve({ name: "n1", status: status(1) }),
    patch: () => {
      if (failuresLeft-- > 0) return Promise.reject(new Error("connection refused"));
      patches++;
      return Promise.resolve();
    },
    minIntervalMs: 10,
    maxBackoffMs: 40,
    log: (f) => logs.push(f),
  });
  try {
    reporter.request();
    for (let i = 0; i < 100 && patches === 0; i++) await sleep(20);
    assert.equal(patches, 1);
    assert.ok(logs.some((l) => l.msg === "status written again"));
  } finally {
    reporter.stop();
  }
});

Deno.test("statusMergePatch: every owned field it lacks is null, nested ones too", () => {
  const at = new Date("2026-01-02T03:04:05Z");
  const withoutBird = statusMergePatch(
    buildStatus({ ready: true, attachments: 1, ipv6: 1, ipv4: 0 }, 3, "", undefined, { now: at }),
  );
  assert.deepEqual(withoutBird, {
    ready: true,
    reason: "",
    observedGeneration: 3,
    pods: 1,
    allocated: { ipv6: 1, ipv4: 0 },
    bgpSessionsUp: null,
    bgpSessions: null,
    lastBirdReload: null,
    bgp: null,
    drainingCIDRs: null,
    conditions: [{
      type: "Ready",
      status: "True",
      reason: "Serving",
      message: "serving CNI requests",
      lastTransitionTime: "2026-01-02T03:04:05Z",
      observedGeneration: 3,
    }],
  });
  const reloadOk = statusMergePatch(
    buildStatus({ ready: true, attachments: 0, ipv6: 0, ipv4: 0 }, 1, "", {
      sessions: 1,
      sessionsUp: 1,
      lastReload: { time: "2026-01-01T00:00:00.000Z", ok: true },
    }),
  );
  // A failed reload's message is deleted by the next reload that goes well.
  assert.deepEqual(reloadOk.lastBirdReload, {
    time: "2026-01-01T00:00:00.000Z",
    ok: true,
    message: null,
  });
  assert.deepEqual([reloadOk.bgpSessions, reloadOk.bgpSessionsUp], [1, 1]);
  assert.equal(reloadOk.bgp, null, "no router id known: the published one is deleted");
});

Deno.test("buildStatus: the router id in bird.conf is published in status.bgp", () => {
  const s = buildStatus({ ready: true, attachments: 0, ipv6: 0, ipv4: 0 }, 1, "", {
    sessions: 0,
    sessionsUp: 0,
    routerId: { id: "10.0.0.11", source: "nodeInternalIP" },
  });
  assert.deepEqual(s.bgp, { routerID: "10.0.0.11", routerIDSource: "nodeInternalIP" });
  assert.deepEqual(statusMergePatch(s).bgp, s.bgp);
});

Deno.test("ownedStatusText: absent equals null, fields the agent does not own are ignored", () => {
  const s = status(2);
  assert.equal(ownedStatusText({ ...statusMergePatch(s) }), ownedStatusText(s));
  assert.equal(ownedStatusText({ ...s, note: "someone else's" }), ownedStatusText(s));
  assert.equal(ownedStatusText({ ...s, lastBirdReload: {} }), ownedStatusText(s));
  assert.notEqual(ownedStatusText({ ...s, bgpSessions: 0 }), ownedStatusText(s));
  assert.equal(ownedStatusText(undefined), ownedStatusText(null));
});

/** What the API server does with a JSON merge patch (RFC 7386): null deletes, objects merge. */
function applyMergePatch(target: unknown, patch: unknown): unknown {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObject(patch)) return patch;
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}

Deno.test("StatusReporter: fields that go away are deleted on the server, and it settles", async () => {
  type Routing = Parameters<typeof buildStatus>[3];
  let routing: Routing = {
    sessions: 2,
    sessionsUp: 2,
    lastReload: { time: "2026-01-01T00:00:00.000Z", ok: false, message: "syntax error" },
  };
  let stored: Record<string, unknown> = {};
  let patches = 0;
  const reporter = new StatusReporter({
    compute: () =>
      Promise.resolve({
        name: "n1",
        status: buildStatus({ ready: true, attachments: 0, ipv6: 0, ipv4: 0 }, 1, "", routing),
        current: stored,
      }),
    patch: (_name, body) => {
      patches++;
      stored = applyMergePatch(JSON.parse(JSON.stringify(stored)), body) as typeof stored;
      // The watch hands the stored status back, as the API server's event would.
      setTimeout(() => reporter.observe(stored), 1);
      return Promise.resolve();
    },
    minIntervalMs: 10,
    log: () => {},
  });
  const settle = async (want: number) => {
    for (let i = 0; i < 100 && patches < want; i++) await sleep(10);
    await sleep(100); // ten intervals: a status that never matches would be patched again
    assert.equal(patches, want);
  };
  try {
    reporter.request();
    await settle(1);
    assert.equal((stored.lastBirdReload as { message?: string }).message, "syntax error");
    routing = { ...routing!, lastReload: { time: "2026-01-01T00:01:00.000Z", ok: true } };
    reporter.request();
    await settle(2);
    assert.deepEqual(stored.lastBirdReload, { time: "2026-01-01T00:01:00.000Z", ok: true });
    routing = undefined; // BIRD no longer driven
    reporter.request();
    await settle(3);
    for (const gone of ["bgpSessionsUp", "bgpSessions", "lastBirdReload"]) {
      assert.ok(!(gone in stored), `${gone} deleted: ${JSON.stringify(stored)}`);
    }
    assert.deepEqual(
      (stored.conditions as Condition[]).map((c) => c.type),
      ["Ready"],
    );
    // Someone else's field is theirs: no patch, no loop.
    stored = { ...stored, note: "written by an operator" };
    reporter.observe(stored);
    await settle(3);
  } finally {
    reporter.stop();
  }
});

Deno.test("StatusReporter: counters-only changes wait for their own interval; others do not", async () => {
  let pods = 0;
  let reason = "";
  const { reporter, sent } = recordingReporter(
    () => buildStatus({ ready: true, attachments: pods, ipv6: pods, ipv4: 0 }, 1, reason),
    { minIntervalMs: 10, countersIntervalMs: () => 400 },
  );
  try {
    reporter.request();
    await sleep(50);
    assert.equal(sent.length, 1, "the first status goes out at once");
    pods = 3;
    reporter.request();
    await sleep(100);
    assert.equal(sent.length, 1, "pods only: held back");
    reason = "something is wrong";
    reporter.request();
    await sleep(100);
    assert.equal(sent.length, 2, "a new reason goes out within the short interval");
    assert.equal(sent[1].pods, 3, "with the counters of the moment");
    pods = 5;
    reporter.request();
    for (let i = 0; i < 100 && sent.length < 3; i++) await sleep(10);
    assert.equal(sent.length, 3, "the held-back counters go out after their interval");
    assert.equal(sent[2].pods, 5);
  } finally {
    reporter.stop();
  }
});

Deno.test("countersIntervalMs: 10 s up to 20 nodes, then at most 2 counter writes a second in all", () => {
  assert.equal(countersIntervalMs(1), STATUS_COUNTERS_INTERVAL_MS);
  assert.equal(countersIntervalMs(20), 10_000);
  assert.equal(countersIntervalMs(100), 50_000);
  assert.equal(countersIntervalMs(1000), 500_000);
  // The cluster's rate: N nodes, one counter write each per interval.
  for (const n of [50, 200, 1000, 5000]) {
    assert.ok(n / (countersIntervalMs(n) / 1000) <= STATUS_COUNTER_WRITES_PER_SECOND);
  }
  assert.equal(countersIntervalMs(3, 400), 1500, "a smaller floor (tests) still scales");
});

Deno.test("StatusReporter: while counters are held back, a burst of changes is computed at most once per interval", async () => {
  let pods = 0;
  let computes = 0;
  const { reporter, sent } = recordingReporter(() => {
    computes++;
    return status(pods);
  }, { minIntervalMs: 100, countersIntervalMs: () => 60_000 });
  try {
    reporter.request();
    await sleep(50);
    assert.equal(sent.length, 1);
    const before = computes;
    // 50 ADDs over about 500 ms: each only moves the counters.
    for (let i = 0; i < 50; i++) {
      pods++;
      reporter.request();
      await sleep(10);
    }
    await sleep(150);
    const during = computes - before;
    assert.ok(during <= 8, `${during} computes for 50 requests in ~0.65 s (interval 100 ms)`);
    assert.ok(during >= 1, "the burst was looked at");
    assert.equal(sent.length, 1, "counters only: still held back");
  } finally {
    reporter.stop();
  }
});

Deno.test("StatusReporter: draining CIDRs go out within the short interval, their release too", async () => {
  let draining: string[] = [];
  let pods = 1;
  const { reporter, sent } = recordingReporter(
    () =>
      buildStatus({ ready: true, attachments: pods, ipv6: pods, ipv4: 0 }, 1, "", {
        sessions: 1,
        sessionsUp: 1,
        drainingCIDRs: draining,
      }),
    // Far longer than this test: only a change that is not counters-only can go out.
    { minIntervalMs: 10, countersIntervalMs: () => 60_000 },
  );
  try {
    reporter.request();
    await sleep(50);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].drainingCIDRs, null, "nothing drains: the field is deleted");
    draining = ["fd00:2::/64", "10.2.0.0/24"];
    reporter.request();
    await sleep(100);
    assert.equal(sent.length, 2, "the old CIDRs are published at once");
    assert.deepEqual(sent[1].drainingCIDRs, ["10.2.0.0/24", "fd00:2::/64"], "sorted");
    // The last old pod deleted: one pod fewer and no draining CIDR, in one prompt write.
    pods = 0;
    draining = [];
    reporter.request();
    await sleep(100);
    assert.equal(sent.length, 3, "the release goes out at once, not with the counters");
    assert.deepEqual([sent[2].drainingCIDRs, sent[2].pods], [null, 0]);
  } finally {
    reporter.stop();
  }
});
