/**
 * Watching a running agent from outside while it works: STATUS round trips sent back to back
 * (a blocked event loop stalls them all, and the runtime marks the node NotReady), the agent's
 * JSON log lines and `flock status --json`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { callAgent } from "../../cni.ts";
import type { FlockNode } from "./flock.ts";
import { run } from "./exec.ts";
import type { StatusSnapshot } from "../../agent/status_snapshot.ts";
import { eventually } from "./eventually.ts";

/** One STATUS round trip to the agent over its socket, as the plugin makes it (cni.ts). */
export interface StatusProbe {
  /** Date.now() when the request was sent and when the answer arrived. */
  sent: number;
  answered: number;
  ok: boolean;
}

/** A bound no STATUS answer may exceed (a blocked event loop would stall them all). */
export const STATUS_BOUND_MS = 2_000;

/**
 * Asks the agent for STATUS back to back (`gapMs` apart) until `stop()`, or for at most
 * `maxMs`; `stop()` resolves to the timing of every answer.
 */
export function probeStatus(
  node: FlockNode,
  gapMs = 10,
  maxMs = 60_000,
): { stop(): Promise<StatusProbe[]> } {
  let stopped = false;
  const probes: StatusProbe[] = [];
  const until = Date.now() + maxMs;
  const loop = (async () => {
    while (!stopped && Date.now() < until) {
      const sent = Date.now();
      const r = await callAgent(node.socketPath, {
        command: "STATUS",
        containerId: "",
        netns: "",
        ifname: "",
        args: "",
        config: { cniVersion: "1.1.0", name: "probe", type: "flock" },
      }, STATUS_BOUND_MS * 2);
      probes.push({ sent, answered: Date.now(), ok: r.ok });
      await new Promise((res) => setTimeout(res, gapMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return probes;
    },
  };
}

/** The slowest STATUS round trip of `probes`, in ms (-Infinity for none). */
export function slowestStatusMs(probes: StatusProbe[]): number {
  return Math.max(...probes.map((p) => p.answered - p.sent));
}

/** Asserts that every STATUS was answered, each within `boundMs`. */
export function assertStatusAnswered(
  probes: StatusProbe[],
  why: string,
  boundMs = STATUS_BOUND_MS,
): void {
  assert.ok(probes.length > 0, `no STATUS was sent (${why})`);
  const failed = probes.filter((p) => !p.ok).length;
  assert.equal(failed, 0, `${failed} of ${probes.length} STATUS requests failed (${why})`);
  const slowest = slowestStatusMs(probes);
  assert.ok(
    slowest < boundMs,
    `the slowest STATUS took ${slowest} ms (bound ${boundMs} ms; ${why})`,
  );
}

/** The agent's JSON log lines. */
export async function agentEvents(node: FlockNode): Promise<Record<string, unknown>[]> {
  const events: Record<string, unknown>[] = [];
  for (const line of (await node.agentLog()).split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      events.push(JSON.parse(line));
    } catch {
      // not one of the agent's log lines
    }
  }
  return events;
}

/**
 * The agent's log events that `match`, once at least `count` of them are there: the agent's
 * stderr reaches its log file a moment after what it reports is visible (store, answer).
 */
export function loggedEvents(
  node: FlockNode,
  match: (event: Record<string, unknown>) => boolean,
  count = 1,
  ms = 5_000,
): Promise<Record<string, unknown>[]> {
  return eventually(
    `${count} agent log event(s) like that`,
    async () => (await agentEvents(node)).filter(match),
    (events) => events.length >= count,
    ms,
    20,
  );
}

/** The agent's state as `flock status --json` prints it. */
export async function flockStatusJson(node: FlockNode): Promise<StatusSnapshot> {
  const r = await run([node.executable, "status", "--json", "--socket", node.socketPath], {
    timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** `[family, allocated, cooling]` of each pool of a `flock status --json` snapshot. */
export function poolCounts(status: StatusSnapshot): [string, number, number][] {
  return status.pools.map((p) => [p.family, p.allocated, p.cooling]);
}
