/**
 * A flock Agent run inside the test process (not as a child process, as FlockNode runs it) for
 * a node namespace of its own, for tests that call the Agent's methods directly.
 *
 * @module
 */

import { join } from "node:path";
import { Agent } from "../../agent/agent.ts";
import { TestNamespace } from "./netns.ts";

/** The agent, its node namespace and its temp dir; disposing closes and removes all three. */
export interface InProcessAgent extends AsyncDisposable {
  agent: Agent;
  node: TestNamespace;
  /** Holds the agent's state dir (`state`) and socket (`flock.sock`). */
  dir: string;
}

/**
 * A new node namespace named after `nsPrefix` and an Agent for it (not listening, not
 * configured; no cooldown, no log unless `log` takes it), its store and socket in a new temp dir.
 */
export async function inProcessAgent(
  nsPrefix: string,
  nodeName: string,
  log: (fields: Record<string, unknown>) => void = () => {},
): Promise<InProcessAgent> {
  const node = await TestNamespace.create(nsPrefix);
  let dir: string;
  try {
    dir = await Deno.makeTempDir({ prefix: `${nsPrefix}-` });
  } catch (e) {
    await node.remove();
    throw e;
  }
  const agent = new Agent({
    nodeName,
    stateDir: join(dir, "state"),
    socketPath: join(dir, "flock.sock"),
    netnsPath: node.path,
    cooldownMs: 0,
    log,
  });
  return {
    agent,
    node,
    dir,
    async [Symbol.asyncDispose]() {
      try {
        await agent.close();
      } finally {
        await Deno.remove(dir, { recursive: true });
        await node.remove();
      }
    },
  };
}
