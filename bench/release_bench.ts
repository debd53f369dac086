/**
 * The release path's cost (issue 3): netlink requests per DEL, a GC of many pods, and the start
 * of an agent that finds many `releasing` records (a crash during a large GC).
 *
 * In-process, with the real pieces: a throwaway node namespace (eth0 uplink), one namespace per
 * pod, a store in a temp dir, and a PodHandler whose ADDs build real dual-stack datapaths. The
 * requests are counted by patching Handle (tests/helpers/netlink_count.ts), the times are wall
 * times. Everything is removed at the end, also on failure.
 *
 * - DEL: `--dels` pods, each released by a synchronous DEL (the whole release, both halves);
 * - GC: `--pods` pods, all released by one GC (valid list empty);
 * - start-up: `--pods` pods marked releasing in the store, then the start-up reconcile (the time
 *   before the agent would serve).
 *
 * Run as root: `deno run -A --no-lock bench/release_bench.ts [--pods 100] [--dels 10]`
 *
 * @module
 */

import { join } from "node:path";
import { createNode, TestNamespace } from "../tests/helpers/netns.ts";
import { countNetlinkRequests } from "../tests/helpers/netlink_count.ts";
import { rpcRequest } from "../tests/helpers/rpc_request.ts";
import { Handle } from "../netlink/mod.ts";
import { Datapath } from "../agent/datapath.ts";
import { Store } from "../agent/store.ts";
import { AddressPool } from "../agent/ipam.ts";
import { parseNodeConfig } from "../agent/config.ts";
import { PodHandler } from "../agent/pod_handler.ts";
import { reconcile } from "../agent/reconcile.ts";
import type { RpcRequest } from "../agent/protocol.ts";
import { formatTable, ms, type ResultRow } from "./report.ts";
import { integerArgs } from "./args.ts";

const { pods: PODS, dels: DELS } = integerArgs({
  pods: { default: 100, min: 1, max: 200 },
  dels: { default: 10, min: 1 },
});
if (DELS > PODS) throw new Error("--dels: at most --pods");

const node = parseNodeConfig({ cidr6: "fd00:be::/64", cidr4: "10.190.0.0/16" }, "bench");

function request(command: RpcRequest["command"], containerId: string, netns: string): RpcRequest {
  return rpcRequest(command, containerId, netns, "bench", { "cni.dev/valid-attachments": [] });
}

/** A node's pieces: a store in `dir`, fresh pools, a handler (the agent's, without its server). */
function agentParts(handle: Handle, dir: string) {
  const store = Store.open(dir);
  const pool6 = new AddressPool(node.cidr6!, { cooldownMs: 0 });
  const pool4 = new AddressPool(node.cidr4!, { cooldownMs: 0 });
  const datapath = new Datapath(handle, { routesIPv4: true });
  const handler = new PodHandler({ store, datapath, node, pool6, pool4, log: () => {} });
  return { store, pool6, pool4, datapath, handler };
}

const fixture = await createNode({
  prefix: "flk-relb",
  ipv4: { node: "192.168.190.2/24", peer: "192.168.190.1/24" },
  ipv6: { node: "fd90::2/64", peer: "fd90::1/64" },
});
const namespaces: TestNamespace[] = [];
const dir = await Deno.makeTempDir({ prefix: "flock-release-bench-" });
try {
  for (let i = 0; i < PODS; i++) namespaces.push(await TestNamespace.create("flk-relp"));
  using handle = Handle.forNetns(fixture.node.path);
  const rows: ResultRow[] = [];
  let parts = agentParts(handle, join(dir, "a"));
  const addAll = async (tag: string) => {
    for (const [i, ns] of namespaces.entries()) {
      await parts.handler.add(request("ADD", `${tag}${i}`, ns.path));
    }
  };

  // Requests per DEL: the whole release of one committed dual-stack pod.
  await addAll("del");
  {
    using counted = countNetlinkRequests();
    const t0 = performance.now();
    for (const [i, ns] of namespaces.slice(0, DELS).entries()) {
      await parts.handler.del(request("DEL", `del${i}`, ns.path));
    }
    const perDel = (performance.now() - t0) / DELS;
    rows.push({
      what: `DEL of a dual-stack pod (mean of ${DELS})`,
      figure: `${(counted.total / DELS).toFixed(1)} requests in ` +
        `${(counted.sends / DELS).toFixed(1)} sends, ${ms(perDel)}`,
    });
  }

  // GC of the rest (and the DEL'd ones' namespaces are empty again: ADD them back first).
  for (const [i, ns] of namespaces.slice(0, DELS).entries()) {
    await parts.handler.add(request("ADD", `del${i}`, ns.path));
  }
  {
    using counted = countNetlinkRequests();
    const t0 = performance.now();
    await parts.handler.gc(request("GC", "", ""));
    const gcMs = performance.now() - t0;
    rows.push({
      what: `GC of ${PODS} pods`,
      figure: `${ms(gcMs)} (${ms(gcMs / PODS)}/pod), ${counted.total} requests ` +
        `(${(counted.total / PODS).toFixed(1)}/pod)`,
    });
  }
  if (parts.store.list().length !== 0) throw new Error("GC left records");

  // Start-up with every pod releasing: as a crash right after a GC took them off the network.
  for (const count of [...new Set([Math.min(30, PODS), PODS])]) {
    await addAll(`rel${count}x`);
    for (const rec of parts.store.list().slice(0, count)) {
      parts.store.markReleasing(rec.containerId, rec.ifname, Date.now());
    }
    const rest = parts.store.list().filter((r) => r.state === "committed");
    for (const rec of rest) {
      await parts.handler.del(request("DEL", rec.containerId, rec.netns));
    }
    parts.store.close();
    parts = agentParts(handle, join(dir, "a"));
    using counted = countNetlinkRequests();
    const t0 = performance.now();
    const report = await reconcile({
      store: parts.store,
      datapath: parts.datapath,
      pool6: parts.pool6,
      pool4: parts.pool4,
      cooldownMs: 0,
    });
    const startMs = performance.now() - t0;
    if (report.released !== count || parts.store.list().length !== 0) {
      throw new Error(`reconcile released ${report.released} of ${count}`);
    }
    rows.push({
      what: `start-up reconcile with ${count} releasing records`,
      figure: `${ms(startMs)} (${ms(startMs / count)}/record), ${counted.total} requests`,
    });
  }
  parts.store.close();
  console.log(
    formatTable(`release path (${navigator.hardwareConcurrency} cpus)`, rows),
  );
} finally {
  for (const ns of namespaces) await ns.remove().catch(() => {});
  await fixture.remove();
  await Deno.remove(dir, { recursive: true });
}
