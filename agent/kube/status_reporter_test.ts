import assert from "node:assert/strict";
import { buildStatus, type NodeConfigStatus, StatusReporter } from "./status_reporter.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function status(attachments: number): NodeConfigStatus {
  return buildStatus(
    { ready: true, attachments, ipv6: attachments, ipv4: 0 },
    1,
    "",
  );
}

Deno.test("buildStatus: the shape written to NodeConfig.status", () => {
  assert.deepEqual(
    buildStatus(
      { ready: false, attachments: 3, ipv6: 3, ipv4: 2 },
      7,
      "waiting for NodeConfig n1",
    ),
    {
      ready: false,
      reason: "waiting for NodeConfig n1",
      observedGeneration: 7,
      pods: 3,
      allocated: { ipv6: 3, ipv4: 2 },
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
});

Deno.test("StatusReporter: a burst becomes one patch per interval, with the latest status", async () => {
  let count = 0;
  const sent: NodeConfigStatus[] = [];
  const reporter = new StatusReporter({
    compute: () => Promise.resolve({ name: "n1", status: status(count) }),
    patch: (_name, s) => {
      sent.push(s);
      return Promise.resolve();
    },
    minIntervalMs: 100,
    log: () => {},
  });
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
