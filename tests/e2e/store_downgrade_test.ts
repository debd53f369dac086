/**
 * A downgrade: the agent binary is older than the one that last wrote the node's store (a
 * rollback of the DaemonSet). The agent must refuse the store without changing it or the
 * node, say why in one line, and exit non-zero, so the runtime's CNI calls fail loudly and
 * the operator sees the reason in the pod's log, instead of running on records it cannot read.
 */

import assert from "node:assert/strict";
import { FlockNode } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import {
  manyOldRecords,
  schemaOf,
  setUserVersion,
  writeSchema2Store,
} from "../helpers/old_store.ts";
import { SCHEMA_VERSION, Store } from "../../agent/store.ts";

/** The agent's exit status, or a failure if it is still running after `ms`. */
async function exitWithin(node: FlockNode, ms: number): Promise<Deno.CommandStatus> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the agent still runs after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([node.agent!.status, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The agent's log lines once its stderr has been copied out whole: the copy runs behind the
 * process, so right after the exit the file may still lack the last line (bounded: 5 s).
 */
async function logAfterExit(node: FlockNode): Promise<{ level?: string }[]> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const text = await node.agentLog();
    if (text.includes('"stopped"') || text.includes('"level":"error"') || Date.now() > deadline) {
      return text.trim().split("\n").map((l) => JSON.parse(l));
    }
    await new Promise((res) => setTimeout(res, 20));
  }
}

Deno.test({
  name: "downgrade: an agent older than its store says so in one line, exits 1, changes nothing",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:d6::/64", cidr4: "10.214.0.0/24" },
      startAgent: false,
    });
    const records = manyOldRecords(3);
    writeSchema2Store(node.stateDir, records);
    Store.open(node.stateDir).close();
    setUserVersion(node.stateDir, SCHEMA_VERSION + 1);
    const before = schemaOf(node.stateDir);

    await node.startAgent({ waitReady: false });
    const status = await exitWithin(node, 20_000);
    node.agent = undefined;
    assert.equal(status.code, 1, "exit code");

    const lines = await logAfterExit(node);
    const errors = lines.filter((l) => l.level === "error");
    assert.equal(errors.length, 1, `one error line: ${JSON.stringify(lines)}`);
    const text = JSON.stringify(errors[0]);
    assert.match(text, /flock\.db has store schema version/);
    assert.match(
      text,
      new RegExp(`${SCHEMA_VERSION + 1}, newer than this flock's ${SCHEMA_VERSION}`),
    );
    assert.match(text, /downgrades are not supported/);

    assert.deepEqual(schemaOf(node.stateDir), before, "the store is as the newer flock left it");
    assert.deepEqual(await node.flockRoutes(true), [], "no route was touched");
    assert.deepEqual(await node.flockLinks(), []);
    const r = await node.cni("STATUS");
    assert.notEqual(r.code, 0, "the plugin reports the node unusable");
  },
});
