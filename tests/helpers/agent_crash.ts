/**
 * What the crash tests (crash points, SIGKILL storms) share: waiting for the killed agent process
 * to be gone, and the CNI code the plugin answers with meanwhile.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { FlockNode } from "./flock.ts";

/** CNI code the plugin answers with while the agent is down or restarting. */
export const TRY_AGAIN = 11;

/** Waits (bounded) for the agent process to die and returns how it ended. */
export async function agentExit(
  node: FlockNode,
  timeoutMs = 10_000,
): Promise<Deno.CommandStatus> {
  const child = node.agent;
  assert.ok(child, "no agent process");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the agent did not die")), timeoutMs);
  });
  try {
    return await Promise.race([child.status, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
