/**
 * GC after a runtime restart: many attachments released in one request. GC answers once every
 * one of them is gone (records, veths, routes) and its addresses are cooling, and the agent keeps
 * answering STATUS meanwhile (the veth deletions run off the event loop). One failed deletion
 * does not stop the others; GC reports it and the stuck-release sweep finishes it.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { callAgent } from "../../cni.ts";
import { hostIfaceName } from "../../agent/datapath.ts";
import {
  addLivePod,
  assertNodeHolds,
  flockLinksNow,
  type LivePod,
  podAddresses,
  resultIps,
  storeRecords,
} from "../helpers/node_state.ts";
import { CRASH_ENV } from "../../agent/crash_points.ts";
import { FAIL_VETH_DELETE_ENV, RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";
import { assertCniError } from "../helpers/cni_output.ts";
import { eventually } from "../helpers/eventually.ts";
import {
  assertStatusAnswered,
  flockStatusJson,
  loggedEvents,
  poolCounts,
  probeStatus,
  slowestStatusMs,
  type StatusProbe,
} from "../helpers/status_probe.ts";

/** Each STATUS answered during a GC within this (a GC blocking the event loop would stall). */
const STATUS_DURING_GC_BOUND_MS = 500;
/** STATUS answers (sent back to back) that must fall within a GC of 12 (measured: ~30). */
const MIN_STATUS_DURING_GC = 5;

/** `cni.dev/valid-attachments` naming `pods` (on eth0), in both spellings libcni sends. */
function validAttachments(pods: LivePod[]): Record<string, unknown> {
  const valid = pods.map((p) => ({ containerID: p.containerId, ifname: "eth0" }));
  return { cniVersion: "1.1.0", "cni.dev/valid-attachments": valid, "cni.dev/attachments": valid };
}

/** Creates `count` pod namespaces and ADDs a pod into each (concurrently). */
async function addPods(
  node: FlockNode,
  prefix: string,
  count: number,
): Promise<{ namespaces: TestNamespace[]; pods: LivePod[] }> {
  const namespaces: TestNamespace[] = [];
  try {
    for (let i = 0; i < count; i++) namespaces.push(await TestNamespace.create("flk-gcp"));
    const pods = await Promise.all(
      namespaces.map((ns, i) => addLivePod(node, `${prefix}${i}`, ns.path)),
    );
    return { namespaces, pods };
  } catch (e) {
    await removeAll(namespaces);
    throw e;
  }
}

async function removeAll(namespaces: TestNamespace[]): Promise<void> {
  for (const ns of namespaces) await ns.remove().catch(() => {});
}

Deno.test({
  name: "GC releases 12 attachments at once, off the event loop: STATUS is answered throughout",
  ...ROOT_ONLY,
  async fn() {
    const stale = 12;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e1::/64", cidr4: "10.225.0.0/24" },
      // Released addresses cool for a minute: "cooling" proves GC released them.
      cooldownMs: 60_000,
    });
    const kept = await addPods(node, "keep", 2);
    const gone = await addPods(node, "gone", stale);
    try {
      await assertNodeHolds(node, [...kept.pods, ...gone.pods], "before GC");
      const probes = probeStatus(node, 2);
      let allProbes: StatusProbe[] | undefined;
      let gcStarted = 0, gcAnswered = 0;
      try {
        // Straight to the agent's socket (as the plugin forwards it), to time the agent's work.
        gcStarted = Date.now();
        const gc = await callAgent(node.socketPath, {
          command: "GC",
          containerId: "",
          netns: "",
          ifname: "",
          args: "",
          config: JSON.parse(await node.netconf(validAttachments(kept.pods))),
        }, 60_000);
        gcAnswered = Date.now();
        assert.deepEqual(gc, { ok: true }, "GC succeeds");
      } finally {
        allProbes = await probes.stop();
      }
      // At the answer, not eventually: GC answers only once everything is released.
      await assertNodeHolds(node, kept.pods, "right after GC answered");
      assert.deepEqual(
        await flockStatusJson(node).then(poolCounts),
        [["ipv6", 2, stale], ["ipv4", 2, stale]],
        "the kept pods' addresses allocated, every released one cooling",
      );
      const released = await loggedEvents(node, (e) => e.msg === "gc released attachment", stale);
      assert.deepEqual(
        released.map((e) => e.containerId).sort(),
        gone.pods.map((p) => p.containerId).sort(),
      );
      const during = allProbes.filter((p) => p.sent >= gcStarted && p.answered <= gcAnswered);
      const duringMs = during.map((p) => p.answered - p.sent);
      console.log(
        `GC released ${stale} attachments in ${gcAnswered - gcStarted} ms; ` +
          `${during.length} STATUS answered within it (slowest ${Math.max(0, ...duringMs)} ms), ` +
          `${allProbes.length} in all (slowest ${slowestStatusMs(allProbes)} ms)`,
      );
      assertStatusAnswered(allProbes, "around a GC of 12", STATUS_DURING_GC_BOUND_MS);
      // A GC blocking the event loop answers at most the STATUS already in flight when it started
      // and the one it held back (measured: 0-2, the held one waiting ~400 ms for 12 veths).
      assert.ok(
        during.length >= MIN_STATUS_DURING_GC,
        `${during.length} STATUS answered during the ${gcAnswered - gcStarted} ms GC, want at ` +
          `least ${MIN_STATUS_DURING_GC} (${allProbes.length} sent)`,
      );
      // The kept pods still work through the plugin, and a second GC has nothing to do.
      const again = await node.cni("GC", { ifname: "", extraConfig: validAttachments(kept.pods) });
      assert.equal(again.code, 0, again.stdout);
      await assertNodeHolds(node, kept.pods, "after a second GC");
    } finally {
      await removeAll([...kept.namespaces, ...gone.namespaces]);
    }
  },
});

Deno.test({
  name: "GC where veth deletions fail: code 11, the others released, the sweep finishes them",
  ...ROOT_ONLY,
  async fn() {
    const stale = 4;
    // Two, so that the sweep has several stuck releases to retry at once.
    const failing = 2;
    // Long enough that the state right after GC is read before the first sweep (checked below).
    const sweepMs = 5_000;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e2::/64", cidr4: "10.226.0.0/24" },
      cooldownMs: 60_000,
      startAgent: false,
    });
    await node.startAgent({
      env: { [FAIL_VETH_DELETE_ENV]: String(failing), [RELEASE_SWEEP_ENV]: String(sweepMs) },
    });
    const agentStarted = performance.now();
    const kept = await addPods(node, "keep", 1);
    const gone = await addPods(node, "gone", stale);
    try {
      // Through the installed plugin, as the runtime calls it.
      const gc = await node.cni("GC", { ifname: "", extraConfig: validAttachments(kept.pods) });
      // The state right after the answer, read before the sweep can change it.
      const records = storeRecords(node);
      const [pools, links] = await Promise.all([
        flockStatusJson(node).then(poolCounts),
        // Not node.flockLinks(): it waits for releases to settle, and one is stuck.
        flockLinksNow(node),
      ]);
      const readAt = Math.round(performance.now() - agentStarted);
      const why = `read ${readAt} ms after the agent started (sweep every ${sweepMs} ms)`;
      assertCniError(
        gc,
        11,
        new RegExp(
          `GC released ${stale - failing} of ${stale} attachments; gone\\d/eth0: .*injected`,
        ),
      );
      // Exactly the failed stale attachments are left, releasing, their addresses still held.
      const stuck = records.filter((r) => r.state === "releasing");
      assert.equal(stuck.length, failing, `${failing} attachments stay releasing (${why})`);
      const failedIds = stuck.map((r) => r.containerId).sort();
      assert.deepEqual(
        gc.json.details.split("; ").map((d: string) => d.split("/")[0]).sort(),
        failedIds,
        "the details name every attachment GC could not release",
      );
      assert.deepEqual(
        records.filter((r) => r.state !== "releasing").map((r) => r.containerId),
        kept.pods.map((p) => p.containerId),
        "every other stale attachment is released",
      );
      assert.deepEqual(
        pools,
        [["ipv6", 1 + failing, stale - failing], ["ipv4", 1 + failing, stale - failing]],
        `the kept and the stuck pods' addresses allocated, the others cooling (${why})`,
      );
      for (const id of failedIds) {
        const host = links.find((l) => l.ifname === hostIfaceName(id));
        assert.ok(host, `the stuck veth of ${id} is still there (${why})`);
        assert.ok(!host.flags.includes("UP"), `the stuck veth is down: ${host.flags}`);
      }
      assert.deepEqual(
        links.map((l) => l.ifname).sort(),
        [...kept.pods.map((p) => p.containerId), ...failedIds].map(hostIfaceName).sort(),
        "the released attachments' veths are gone",
      );
      for (const id of failedIds) {
        await loggedEvents(
          node,
          (e) =>
            e.msg === "gc could not release attachment; it stays releasing" &&
            e.containerId === id && e.level === "error",
        );
      }

      // One sweep finishes them (its retries run concurrently).
      await eventually(
        "the sweep to finish the releases GC left stuck",
        () => Promise.resolve(storeRecords(node).length),
        (n) => n === kept.pods.length,
        2 * sweepMs + 10_000,
        50,
      );
      for (const id of failedIds) {
        await loggedEvents(
          node,
          (e) => e.msg === "finished a stuck release" && e.containerId === id,
        );
      }
      await loggedEvents(node, (e) => e.msg === "retrying stuck releases" && e.count === failing);
      await assertNodeHolds(node, kept.pods, "after the sweep");
      assert.deepEqual(await flockStatusJson(node).then(poolCounts), [["ipv6", 1, stale], [
        "ipv4",
        1,
        stale,
      ]]);
    } finally {
      await removeAll([...kept.namespaces, ...gone.namespaces]);
    }
  },
});

Deno.test({
  name:
    "GC of 50 attachments with an ADD arriving meanwhile: nothing of the 50 left, the ADD works",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e3::/64", cidr4: "10.227.0.0/24" },
    });
    const kept = await addPods(node, "keep", 1);
    const gone = await addPods(node, "gone", 50);
    const late = await TestNamespace.create("flk-gcp");
    try {
      await assertNodeHolds(node, [...kept.pods, ...gone.pods], "before GC");
      // The late pod is in the runtime's list already: GC must keep it, before or after its ADD.
      const valid = validAttachments([...kept.pods, { containerId: "late0", ips: [] }]);
      const started = Date.now();
      const [gc, add] = await Promise.all([
        node.cni("GC", { ifname: "", extraConfig: valid }),
        // The plugin's exec and connect take longer than GC's start: the ADD waits for GC.
        node.cni("ADD", { containerId: "late0", netns: late.path }),
      ]);
      console.log(`GC of 50 with an ADD meanwhile: both answered in ${Date.now() - started} ms`);
      assert.equal(gc.code, 0, gc.stdout);
      assert.equal(add.code, 0, add.stdout);
      const latePod = { containerId: "late0", ips: resultIps(add.json) };
      await assertNodeHolds(node, [...kept.pods, latePod], "after GC and the ADD");
      for (const ns of gone.namespaces) {
        assert.deepEqual(await podAddresses(ns), [], `${ns.name} has no flock interface left`);
      }
      assert.deepEqual(
        await flockStatusJson(node).then(poolCounts),
        [["ipv6", 2, 0], ["ipv4", 2, 0]],
        "only the kept and the late pod hold addresses",
      );
      assert.ok(await ping(late, kept.pods[0].ips[0]), "the late pod reaches the kept one");
    } finally {
      await removeAll([...kept.namespaces, ...gone.namespaces, late]);
    }
  },
});

Deno.test({
  name: "a crash during a GC of 30 leaves 30 releasing records; the restart finishes them all",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e4::/64", cidr4: "10.228.0.0/24" },
      cooldownMs: 60_000,
    });
    const kept = await addPods(node, "keep", 1);
    const gone = await addPods(node, "gone", 30);
    try {
      // Killed once the first veth of the GC is gone: every one of the 30 is off the network and
      // durably releasing, most veths still there.
      await node.kill();
      await node.startAgent({ env: { [CRASH_ENV]: "del-after-teardown" } });
      const gc = await node.cni("GC", { ifname: "", extraConfig: validAttachments(kept.pods) });
      assert.notEqual(gc.code, 0, "the agent died during GC");
      await node.kill();
      const records = storeRecords(node);
      assert.equal(records.filter((r) => r.state === "releasing").length, 30);
      const leftLinks = (await flockLinksNow(node)).length - 1;
      assert.ok(leftLinks > 0, "the crash left veths to delete");
      const started = Date.now();
      await node.startAgent();
      console.log(
        `restart with 30 releasing records (${leftLinks} veths left): ready in ` +
          `${Date.now() - started} ms (the agent's start and the plugin's STATUS polls included)`,
      );
      await assertNodeHolds(node, kept.pods, "after the restart");
      const status = await flockStatusJson(node);
      assert.equal(status.reconcile?.released, 30);
      assert.deepEqual(status.reconcile?.problems, []);
      assert.deepEqual(
        poolCounts(status),
        [["ipv6", 1, 30], ["ipv4", 1, 30]],
        "every released address cooling, none leaked and none handed out",
      );
      for (const ns of gone.namespaces) assert.deepEqual(await podAddresses(ns), []);
    } finally {
      await removeAll([...kept.namespaces, ...gone.namespaces]);
    }
  },
});
