/**
 * The agent's periodic sweep against a reconfigure in progress: the reconfigure's reconcile
 * awaits (veth deletions, a busy kernel's pauses, the anycast rebuild), so the sweep's interval
 * can fire in the middle of it, while the handler and pools in force are the old ones and the new
 * pools already hold what the reconcile restored. Each test forces that interleaving by pausing
 * the reconcile (AnycastRoutes.syncAll, its last await) until sweeps have run.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { patch } from "../tests/helpers/patch.ts";
import { parseNodeConfig } from "./config.ts";
import { AnycastRoutes } from "./anycast.ts";
import { Store } from "./store.ts";
import { RELEASE_SWEEP_ENV } from "./test_faults.ts";

const SWEEP_MS = 20;
const WITHHELD = "fd00:7::5";
/** A host veth that is down: an address withheld through it stays withheld (withheld.ts). */
const WITHHELD_VETH = "whv0";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Makes every AnycastRoutes.syncAll first run `during` (the reconcile is paused there, after it
 * restored the pools); undone on dispose.
 */
function pauseAnycastRebuild(during: () => Promise<void>): Disposable {
  return patch(
    AnycastRoutes.prototype,
    "syncAll",
    (real) =>
      async function (this: AnycastRoutes) {
        await during();
        return real.call(this);
      },
  );
}

/** Sets the sweep interval for agents configured until dispose. */
function shortSweep(ms: number): Disposable {
  const before = Deno.env.get(RELEASE_SWEEP_ENV);
  Deno.env.set(RELEASE_SWEEP_ENV, String(ms));
  return {
    [Symbol.dispose]() {
      if (before === undefined) Deno.env.delete(RELEASE_SWEEP_ENV);
      else Deno.env.set(RELEASE_SWEEP_ENV, before);
    },
  };
}

Deno.test({
  name: "agent: a withheld address freed while a reconfigure reconciles is not lost to the " +
    "new pool (the sweep waits for the reconfigure)",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-swr", "swr-node");
    const { agent } = node;
    // An address a release withheld through another pod's veth, which is down (a DEL of that
    // pod in progress): the start keeps it out of IPAM.
    await node.node.ip(["link", "add", WITHHELD_VETH, "type", "veth", "peer", "name", "whv0p"]);
    const seeded = Store.open(join(node.dir, "state"));
    try {
      seeded.finishRelease("gone", "eth0", [], Date.now(), [
        { ip: WITHHELD, hostIface: WITHHELD_VETH, owner: "owner/pod" },
      ]);
    } finally {
      seeded.close();
    }
    const config = parseNodeConfig({ cidr6: "fd00:7::/64" }, "test");
    {
      using _sweep = shortSweep(SWEEP_MS);
      await agent.configure(config);
    }
    const allocated = async () => (await agent.status()).pools[0].allocated;
    await sleep(SWEEP_MS * 3);
    assert.equal(await allocated(), 1, "withheld while its veth is down");

    // The veth goes while the reconfigure's reconcile is past restoring the pools; sweeps run.
    {
      using _pause = pauseAnycastRebuild(async () => {
        await node.node.ip(["link", "del", WITHHELD_VETH]);
        await sleep(SWEEP_MS * 5);
      });
      await agent.reconfigure(config);
    }
    // The sweeps after the reconfigure give it back to the pools in force.
    await sleep(SWEEP_MS * 5);
    assert.equal(
      await allocated(),
      0,
      "the address whose veth went is handed out again, not held by the new pool forever",
    );
  },
});
