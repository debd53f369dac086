/**
 * The agent's callers of netlink dumps against a kernel that is too busy to answer whole: the
 * dumps of a real namespace throw DumpInterruptedError (injected at the Handle, test-only, the
 * first N dumps or all of them) as they do under heavy IPv6 address churn
 * (netlink/handle_edges_test.ts provokes it for real).
 */

import assert from "node:assert/strict";
import { Handle } from "../netlink/handle.ts";
import { DumpInterruptedError } from "../netlink/errors.ts";
import { parsePrefix } from "../netlink/ip.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { reconcile } from "./reconcile.ts";
import { Datapath } from "./datapath.ts";
import { Store } from "./store.ts";
import { kernelBusyCniError, KernelBusyError } from "./kernel_busy.ts";
import { NodeRouting, SUMMARY_ROUTES_DUMP } from "./routing.ts";
import { parseNodeConfig } from "./config.ts";
import { CniCode } from "./protocol.ts";
import { Agent } from "./agent.ts";
import { callAgent } from "../cni.ts";
import { join } from "node:path";

/**
 * Makes the next `count` dumps of every Handle (only those doing `only`, e.g. `list links`,
 * when given) throw as an interrupted dump; undo on dispose.
 */
function interruptDumps(count: number, only?: string): Disposable & { left: () => number } {
  const real = Handle.prototype.dump;
  let left = count;
  Handle.prototype.dump = function (this: Handle, msg, operation) {
    if (left > 0 && (only === undefined || operation === only)) {
      left--;
      throw new DumpInterruptedError(operation, "RTM_GET", 6);
    }
    return real.call(this, msg, operation);
  };
  return {
    left: () => left,
    [Symbol.dispose]() {
      Handle.prototype.dump = real;
    },
  };
}

/** A node namespace with an orphan flock link and an orphan flock route, and an empty store. */
async function nodeWithOrphans() {
  const ns = await TestNamespace.create("flk-kb");
  try {
    await ns.ip(["link", "add", "flock0a0b0c0d", "type", "veth", "peer", "name", "kbpeer"]);
    await ns.ip(["link", "set", "kbpeer", "up"]);
    await ns.ip(["link", "set", "flock0a0b0c0d", "up"]);
    await ns.ip(["-6", "route", "add", "blackhole", "fd00:99::7/128", "proto", "201"]);
  } catch (e) {
    await ns.remove();
    throw e;
  }
  const dir = await Deno.makeTempDir({ prefix: "flock-kb-" });
  const node = Handle.forNetns(ns.path);
  const store = Store.open(dir);
  return {
    ns,
    node,
    store,
    datapath: new Datapath(node, { routesIPv4: false }),
    links: async () => (await ns.ipJson<{ ifname: string }[]>(["link"])).map((l) => l.ifname),
    routes: async () => (await ns.ip(["-6", "route", "show", "proto", "201"])).trim(),
    async [Symbol.asyncDispose]() {
      store.close();
      node.close();
      await ns.remove();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test({
  name: "reconcile: interrupted dumps are read again after a pause, then the orphans go",
  ...ROOT_ONLY,
  async fn() {
    await using n = await nodeWithOrphans();
    const sleeps: number[] = [];
    let report;
    {
      using faults = interruptDumps(3);
      report = await reconcile({
        store: n.store,
        datapath: n.datapath,
        cooldownMs: 0,
        retry: { sleep: (ms) => sleeps.push(ms) },
      });
      assert.equal(faults.left(), 0);
    }
    assert.deepEqual(sleeps, [50, 100, 200]);
    assert.equal(report.orphanLinks, 1);
    assert.equal(report.orphanRoutes, 1);
    assert.ok(!(await n.links()).includes("flock0a0b0c0d"));
    assert.equal(await n.routes(), "");
  },
});

Deno.test({
  name: "reconcile: a node too busy for every try fails the start clearly and deletes nothing",
  ...ROOT_ONLY,
  async fn() {
    await using n = await nodeWithOrphans();
    {
      using _faults = interruptDumps(Infinity);
      await assert.rejects(
        () =>
          reconcile({
            store: n.store,
            datapath: n.datapath,
            cooldownMs: 0,
            retry: { sleep: () => {} },
          }),
        (e: unknown) => {
          assert.ok(e instanceof KernelBusyError);
          assert.match(
            e.message,
            /^start-up reconcile: list the node's links: the kernel gave no whole answer in 8 tries/,
          );
          return true;
        },
      );
    }
    // Nothing was decided on a partial view: the orphans are still there for the next start.
    assert.ok((await n.links()).includes("flock0a0b0c0d"));
    assert.match(await n.routes(), /blackhole fd00:99::7 /);
  },
});

Deno.test({
  name: "datapath: ADD into a pod netns whose dump is interrupted fails with code 11 and why",
  ...ROOT_ONLY,
  async fn() {
    await using n = await nodeWithOrphans();
    await using pod = await TestNamespace.create("flk-kbpod");
    let error: unknown;
    {
      using _faults = interruptDumps(Infinity);
      try {
        n.datapath.setup(
          {
            containerId: "c1",
            netns: pod.path,
            ifname: "eth0",
            ipv6: parsePrefix("fd00:1::5/128").ip,
          },
          { checkNetnsPeers: () => {} },
        );
      } catch (e) {
        error = e;
      }
    }
    assert.ok(error instanceof DumpInterruptedError, String(error));
    const cni = kernelBusyCniError(error);
    assert.equal(cni?.code, CniCode.tryAgainLater);
    assert.match(cni!.message, /list links: RTM_GET dump interrupted 6 times/);
  },
});

Deno.test({
  name: "routing: pruning draining summaries after a DEL survives a busy kernel, logs once",
  ...ROOT_ONLY,
  async fn() {
    await using n = await nodeWithOrphans();
    const logs: Record<string, unknown>[] = [];
    const routing = new NodeRouting({ handle: n.node, nodeName: "n1", log: (f) => logs.push(f) });
    try {
      let holds = true;
      await routing.configure(
        parseNodeConfig({ cidr6: "fd00:1::/64" }, "t"),
        (dst) => holds && dst.len === 64,
      );
      await routing.configure(
        parseNodeConfig({ cidr6: "fd00:2::/64" }, "t"),
        (dst) => holds && dst.len === 64,
      );
      assert.deepEqual(routing.draining.map((p) => p.len), [64]);
      holds = false; // the last pod of the old CIDR went
      {
        using _faults = interruptDumps(Infinity);
        for (let i = 0; i < 3; i++) assert.equal(await routing.pruneDraining(), undefined);
      }
      const warns = logs.filter((l) => l.level === "warn");
      assert.equal(warns.length, 1, JSON.stringify(warns));
      assert.match(String(warns[0].msg), /pruning draining summary routes failed/);
      // Still announced meanwhile; the next DEL's prune finishes it.
      assert.match(await n.ns.ip(["-6", "route", "show", "proto", "201"]), /fd00:1::\/64/);
      await routing.pruneDraining();
      assert.deepEqual(routing.draining, []);
      assert.doesNotMatch(await n.ns.ip(["-6", "route", "show", "proto", "201"]), /fd00:1::\/64/);
      assert.ok(logs.some((l) => l.msg === "pruning draining summary routes recovered"));
    } finally {
      await routing.close();
    }
  },
});

/** An in-process agent on a fresh node namespace, configured with `spec`. */
async function agentOnNode(spec: Record<string, unknown>) {
  const node = await TestNamespace.create("flk-kbagent");
  const dir = await Deno.makeTempDir({ prefix: "flock-kbagent-" });
  const socketPath = join(dir, "flock.sock");
  const agent = new Agent({
    nodeName: "kb-node",
    stateDir: join(dir, "state"),
    socketPath,
    netnsPath: node.path,
    cooldownMs: 0,
    log: () => {},
  });
  const cleanUp = async () => {
    await agent.close();
    await node.remove();
    await Deno.remove(dir, { recursive: true });
  };
  try {
    await agent.listen();
    await agent.configure(parseNodeConfig(spec, "test"));
  } catch (e) {
    await cleanUp();
    throw e;
  }
  return { agent, node, socketPath, [Symbol.asyncDispose]: cleanUp };
}

Deno.test({
  name: "agent: an ADD whose dump the kernel interrupts answers code 11, its retry succeeds",
  ...ROOT_ONLY,
  async fn() {
    await using a = await agentOnNode({ cidr6: "fd00:5::/64" });
    await using pod = await TestNamespace.create("flk-kbpod");
    const add = {
      command: "ADD" as const,
      containerId: "kb1",
      netns: pod.path,
      ifname: "eth0",
      args: "",
      config: { cniVersion: "1.0.0", name: "pods", type: "flock" },
    };
    // A new pod's ADD into a netns no pod is in dumps nothing (agent/netns_identity.ts): the
    // kernel's interruptions cannot reach it. The pod netns of another container's pod must
    // be asked (one flock interface per netns): that dump meets them.
    const first = { ...add, containerId: "kb0" };
    let busy, untouched;
    {
      using _faults = interruptDumps(Infinity);
      untouched = await callAgent(a.socketPath, first, 10_000);
      busy = await callAgent(a.socketPath, add, 10_000);
    }
    assert.ok(untouched.ok, JSON.stringify(untouched));
    assert.ok(!busy.ok);
    assert.equal(busy.error.code, CniCode.tryAgainLater, busy.error.msg);
    assert.match(busy.error.msg, /try again: list links: RTM_GET dump interrupted/);
    const del = await callAgent(a.socketPath, { ...first, command: "DEL" as const }, 10_000);
    assert.ok(del.ok, JSON.stringify(del));
    // Nothing half-made is left in the way: the runtime's retry gets the pod.
    const retried = await callAgent(a.socketPath, add, 10_000);
    assert.ok(retried.ok, JSON.stringify(retried));
    assert.match(await pod.ip(["-6", "addr", "show", "eth0"]), /fd00:5::/);
  },
});

/** The longest gap between ticks of a 5 ms timer: how long the thread was kept from timers. */
class StallMeter implements Disposable {
  longestMs = 0;
  #last = performance.now();
  readonly #timer = setInterval(() => {
    const now = performance.now();
    this.longestMs = Math.max(this.longestMs, now - this.#last);
    this.#last = now;
  }, 5);

  [Symbol.dispose](): void {
    clearInterval(this.#timer);
  }
}

const STATUS = {
  command: "STATUS" as const,
  containerId: "",
  netns: "",
  ifname: "",
  args: "",
  config: { cniVersion: "1.0.0", name: "pods", type: "flock" },
};

/** Whether `p` has settled, read without waiting. */
function settledFlag(p: Promise<unknown>): { settled: boolean } {
  const flag = { settled: false };
  p.then(() => flag.settled = true, () => flag.settled = true);
  return flag;
}

/**
 * STATUS every 50 ms while `work` runs (bounded): how long each one that was answered while
 * `work` was still pending took.
 */
async function statusLatenciesWhile(socketPath: string, work: Promise<unknown>): Promise<number[]> {
  const pending = settledFlag(work);
  const latencies: number[] = [];
  for (let i = 0; i < 200 && !pending.settled; i++) {
    const started = performance.now();
    const answer = await callAgent(socketPath, STATUS, 10_000);
    assert.ok(answer.ok, JSON.stringify(answer));
    if (!pending.settled) latencies.push(performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return latencies;
}

/** Interrupted dumps injected: the first read is retried 5 times, 50+100+200+400+800 ms. */
const INTERRUPTIONS = 5;

Deno.test({
  name: "agent: a NodeConfig change that retries interrupted dumps answers STATUS meanwhile",
  ...ROOT_ONLY,
  async fn() {
    await using a = await agentOnNode({ cidr6: "fd00:5::/64" });
    let latencies, tookMs, stallMs;
    {
      using faults = interruptDumps(INTERRUPTIONS);
      using stall = new StallMeter();
      const started = performance.now();
      // Cluster mode's path: CNI requests wait for it (exclusive), STATUS never does.
      const reconfigured = a.agent.reconfigure(parseNodeConfig({ cidr6: "fd00:6::/64" }, "test"));
      latencies = await statusLatenciesWhile(a.socketPath, reconfigured);
      await reconfigured;
      tookMs = performance.now() - started;
      stallMs = stall.longestMs;
      assert.equal(faults.left(), 0);
    }
    console.log(
      `reconfigure retried for ${tookMs.toFixed(0)} ms; STATUS meanwhile: ${latencies.length} ` +
        `answers, slowest ${Math.max(...latencies).toFixed(1)} ms; ` +
        `longest event-loop stall ${stallMs.toFixed(1)} ms`,
    );
    assert.ok(tookMs >= 1_000, `the retries took ${tookMs} ms`);
    assert.ok(latencies.length >= 5, `STATUS answered ${latencies.length} times meanwhile`);
    assert.ok(Math.max(...latencies) < 200, `STATUS took up to ${Math.max(...latencies)} ms`);
    assert.ok(stallMs < 200, `the event loop stalled for ${stallMs} ms`);
    // The new CIDR's summary is in place once it resolved.
    assert.match(await a.node.ip(["-6", "route", "show", "proto", "201"]), /fd00:6::\/64/);
  },
});

Deno.test({
  name:
    "agent: a SIGHUP's BGP reload that retries interrupted dumps lets an ADD and STATUS through",
  ...ROOT_ONLY,
  async fn() {
    await using a = await agentOnNode({ cidr6: "fd00:5::/64", bgp: { asn: 65001 } });
    await using pod = await TestNamespace.create("flk-kbpod");
    let latencies, added, addMs, addWhilePending, tookMs, stallMs;
    {
      // The summary routes' read alone: the agent's other readers of flock's routes (a host side
      // repair, the look after lost notifications, anycast, withheld addresses) may run in this
      // window at any time and must not take them, nor may the ADD's link dumps.
      using faults = interruptDumps(INTERRUPTIONS, SUMMARY_ROUTES_DUMP);
      using stall = new StallMeter();
      const started = performance.now();
      // Standalone mode's SIGHUP path: not exclusive, pods are served alongside.
      const reloaded = a.agent.reconfigureRouting(
        parseNodeConfig({ cidr6: "fd00:5::/64", bgp: { asn: 65002 } }, "test"),
      );
      const pending = settledFlag(reloaded);
      const add = (async () => {
        await new Promise((resolve) => setTimeout(resolve, 100)); // into the retries
        const addStarted = performance.now();
        // A new pod's ADD into a netns no pod is in dumps nothing: the faults are the reload's.
        added = await callAgent(a.socketPath, {
          command: "ADD",
          containerId: "kb-stall",
          netns: pod.path,
          ifname: "eth0",
          args: "",
          config: { cniVersion: "1.0.0", name: "pods", type: "flock" },
        }, 10_000);
        addMs = performance.now() - addStarted;
        addWhilePending = !pending.settled;
      })();
      latencies = await statusLatenciesWhile(a.socketPath, reloaded);
      await add;
      assert.equal(await reloaded, true);
      tookMs = performance.now() - started;
      stallMs = stall.longestMs;
      assert.equal(faults.left(), 0);
    }
    console.log(
      `BGP reload retried for ${tookMs.toFixed(0)} ms; ADD answered in ${addMs!.toFixed(0)} ms ` +
        `meanwhile: ${addWhilePending}; STATUS meanwhile: ${latencies.length} answers, slowest ` +
        `${Math.max(...latencies).toFixed(1)} ms; longest event-loop stall ${
          stallMs.toFixed(1)
        } ms`,
    );
    assert.ok(tookMs >= 1_000, `the retries took ${tookMs} ms`);
    assert.ok(added!.ok, JSON.stringify(added));
    assert.ok(addWhilePending, "the ADD waited for the reload's retries");
    assert.ok(latencies.length >= 5, `STATUS answered ${latencies.length} times meanwhile`);
    assert.ok(Math.max(...latencies) < 200, `STATUS took up to ${Math.max(...latencies)} ms`);
    assert.ok(stallMs < 200, `the event loop stalled for ${stallMs} ms`);
    assert.match(await pod.ip(["-6", "addr", "show", "eth0"]), /fd00:5::/);
  },
});
