/**
 * A reconfigure (or the first start) that fails or waits part-way must leave a coherent agent:
 * - a reconcile that fails after it released the leftovers in the store gives their addresses
 *   back to the pools still in force too (else they stay taken there until the next start);
 * - a routing step (the summary routes) that fails after the reconcile rewrote the store leaves
 *   the new config fully in force, the summary routes retried in the background;
 * - the first start reports ready only once the node's summary routes are installed.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { patch } from "../tests/helpers/patch.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";
import { parseNodeConfig } from "./config.ts";
import { Store } from "./store.ts";
import { NodeRouting } from "./routing.ts";
import { hostIfaceName } from "./datapath.ts";
import { Handle } from "../netlink/mod.ts";
import { DumpInterruptedError } from "../netlink/errors.ts";

const LEFTOVER_IP = "fd00:7::9";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The node's flock blackhole summary routes, as `ip -6 route` prints them. */
async function summaryRoutes(ns: { ip(args: string[]): Promise<string> }): Promise<string> {
  return await ns.ip(["-6", "route", "show", "type", "blackhole", "proto", "201"]);
}

/**
 * A node with one stuck release (DEL answered, its veth deletion failed: address still taken in
 * the pools in force); a reconfigure, with the fault `failAfterRelease` makes, releases it in the
 * store and then fails. Afterwards the pools in force must agree with the store.
 */
async function failedReconfigureLeaksNothing(
  nsPrefix: string,
  failAfterRelease: () => Disposable,
  error: RegExp,
): Promise<void> {
  await using node = await inProcessAgent(nsPrefix, `${nsPrefix}-node`);
  const { agent } = node;
  const containerId = "leftover";
  const stateDir = join(node.dir, "state");
  const withStore = <T>(use: (store: Store) => T): T => {
    const store = Store.open(stateDir);
    try {
      return use(store);
    } finally {
      store.close();
    }
  };
  withStore((store) => {
    // A pod whose netns is gone (no repair): its address is restored into the pool.
    store.insertPending({
      containerId,
      ifname: "eth0",
      netns: `/run/netns/${nsPrefix}-gone`,
      hostIface: hostIfaceName(containerId),
      ipv6: LEFTOVER_IP,
      anycast: [],
    });
    store.commit(containerId, "eth0");
  });
  const config = parseNodeConfig({ cidr6: "fd00:7::/64" }, "test");
  await agent.configure(config);
  const allocated = async () => (await agent.status()).pools[0].allocated;
  assert.equal(await allocated(), 1, "the committed pod's address is taken");
  assert.ok(withStore((store) => store.markReleasing(containerId, "eth0", Date.now())));
  {
    using _fault = failAfterRelease();
    await assert.rejects(agent.reconfigure(config), error);
  }
  assert.equal(
    withStore((store) => store.get(containerId, "eth0")),
    undefined,
    "the failed reconcile released it in the store",
  );
  assert.equal(await allocated(), 0, "the pools in force agree with the store");
}

Deno.test({
  name: "agent: a reconfigure whose store write fails after releasing a leftover gives its " +
    "address back to the pools still in force",
  ...ROOT_ONLY,
  async fn() {
    // The store write after the leftovers went fails (a full disk).
    await failedReconfigureLeaksNothing(
      "flk-rcf",
      () =>
        patch(Store.prototype, "pruneReleases", () => () => {
          throw new Error("injected: database or disk is full");
        }),
      /disk is full/,
    );
  },
});

Deno.test({
  name: "agent: a reconfigure whose kernel stays busy after releasing a leftover gives its " +
    "address back to the pools still in force",
  ...ROOT_ONLY,
  async fn() {
    // Every link dump after the leftover's release is interrupted, past the retry bound (~3.5 s).
    let released = false;
    await failedReconfigureLeaksNothing("flk-rck", () => {
      const finish = patch(
        Store.prototype,
        "finishRelease",
        (real) =>
          function (this: Store, ...args) {
            const finished = real.apply(this, args);
            released = true;
            return finished;
          },
      );
      const busy = patch(
        Handle.prototype,
        "dump",
        (real) =>
          function (this: Handle, msg, operation) {
            if (released && operation === "list links") {
              throw new DumpInterruptedError(operation, "RTM_GET", 6);
            }
            return real.call(this, msg, operation);
          },
      );
      return {
        [Symbol.dispose]() {
          busy[Symbol.dispose]();
          finish[Symbol.dispose]();
        },
      };
    }, /list the node's links: the kernel gave no whole answer/);
  },
});

Deno.test({
  name: "agent: a reconfigure whose summary routes fail is applied whole; the routes are " +
    "retried in the background",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-rcr", "rcr-node");
    const { agent } = node;
    await agent.configure(parseNodeConfig({ cidr6: "fd00:7::/64" }, "test"));
    const moved = parseNodeConfig({ cidr6: "fd00:8::/64" }, "test");
    let failures = 0;
    {
      using _busy = patch(
        NodeRouting.prototype,
        "applyConfig",
        (real) =>
          async function (this: NodeRouting, ...args) {
            if (failures++ === 0) throw new Error("injected: summary routes: kernel busy");
            return await real.apply(this, args);
          },
      );
      const report = await agent.reconfigure(moved);
      assert.equal(agent.node, moved, "the new config is in force");
      assert.ok(
        report.problems.some((p) => /summary routes/.test(p) && /retried/.test(p)),
        `the failure is reported: ${JSON.stringify(report.problems)}`,
      );
      assert.equal((await agent.status()).pools[0].cidr, "fd00:8::/64");
      let routes = "";
      for (let i = 0; i < 50 && !routes.includes("fd00:8::/64"); i++) {
        await sleep(100);
        routes = await summaryRoutes(node.node);
      }
      assert.match(routes, /fd00:8::\/64/, "the background retry installed the new summary");
      assert.doesNotMatch(routes, /fd00:7::\/64/, "and removed the old one (no pods in it)");
    }
  },
});

Deno.test({
  name: "agent: the first start is ready only once the node's summary routes are installed",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-rdy", "rdy-node");
    const { agent } = node;
    let readyDuringRouting: boolean | undefined;
    let configured: Promise<unknown>;
    {
      using _slow = patch(
        NodeRouting.prototype,
        "applyConfig",
        (real) =>
          async function (this: NodeRouting, ...args) {
            // A busy kernel's pause before the routes are read again.
            await sleep(200);
            readyDuringRouting = agent.ready;
            return await real.apply(this, args);
          },
      );
      configured = agent.configure(parseNodeConfig({ cidr6: "fd00:7::/64" }, "test"));
      await configured;
    }
    assert.equal(readyDuringRouting, false, "not ready while the summary routes are missing");
    assert.equal(agent.ready, true);
    assert.equal((await agent.status()).ready, true);
    assert.match(await summaryRoutes(node.node), /fd00:7::\/64/);
  },
});

/** `flock_reconcile_actions_total{action="restored"}` as a scrape shows it (0 when absent). */
async function restoredCounted(metrics: { encode(): Promise<string> }): Promise<number> {
  const line = /^flock_reconcile_actions_total\{action="restored"\} (\d+)$/m.exec(
    await metrics.encode(),
  );
  return Number(line?.[1] ?? 0);
}

Deno.test({
  name: "agent: a first start whose summary routes fail puts nothing in force (no node config, " +
    "pools, reconcile report or counted reconcile actions) until a try succeeds",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-rff", "rff-node");
    const { agent } = node;
    // A committed pod whose netns is gone: every try's reconcile restores its address.
    const store = Store.open(join(node.dir, "state"));
    try {
      store.insertPending({
        containerId: "kept",
        ifname: "eth0",
        netns: "/run/netns/flk-rff-gone",
        hostIface: hostIfaceName("kept"),
        ipv6: LEFTOVER_IP,
        anycast: [],
      });
      store.commit("kept", "eth0");
    } finally {
      store.close();
    }
    const config = parseNodeConfig({ cidr6: "fd00:7::/64" }, "test");
    {
      using _busy = patch(NodeRouting.prototype, "applyConfig", () => () => {
        return Promise.reject(new Error("injected: summary routes: kernel busy"));
      });
      // Cluster mode retries a failed first configure (1 s doubling to 30 s, indefinitely).
      for (let attempt = 1; attempt <= 2; attempt++) {
        await assert.rejects(agent.configure(config), /kernel busy/);
        assert.equal(agent.ready, false);
        assert.equal(agent.node, undefined, `try ${attempt}: no config in force`);
        assert.equal(agent.reconcileReport, undefined, `try ${attempt}: no reconcile report`);
        const status = await agent.status();
        assert.deepEqual(status.pools, [], `try ${attempt}: flock status shows no pools`);
        assert.equal(status.reconcile, undefined);
        assert.equal(await restoredCounted(agent.metrics!), 0, `try ${attempt}: nothing counted`);
      }
    }
    const report = await agent.configure(config);
    assert.equal(report.restored, 1);
    assert.equal(agent.node, config);
    assert.equal(agent.reconcileReport, report);
    assert.equal(await restoredCounted(agent.metrics!), 1, "the reconcile in force, counted once");
    const status = await agent.status();
    assert.equal(status.pools[0].cidr, "fd00:7::/64");
    assert.equal(status.pools[0].allocated, 1);
  },
});
