/**
 * Crash safety end to end (issue 3): the agent is killed with SIGKILL while pods come and go
 * through the real plugin exec path, and restarted each time. Whatever the interleaving, the node
 * must end up holding exactly the pods the runtime believes are alive — no leaked address, no
 * duplicate, no orphan link or route — and those pods must still reach each other.
 *
 * The storm's choices (which pod, which verb, when to kill, whether to give up an ADD) come from
 * a printed seed; replay with `FLOCK_TEST_SEED=<seed>`. Process timing still varies between runs.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { agentExit, TRY_AGAIN } from "../helpers/agent_crash.ts";
import { Prng } from "../helpers/prng.ts";
import {
  addLivePod,
  assertNodeHolds,
  type LivePod,
  podAddresses,
  resultIps,
  storeRecords,
} from "../helpers/node_state.ts";
import { CRASH_ENV, type CrashPoint } from "../../agent/crash_points.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One pod of the storm and what the runtime believes about it. */
interface StormPod {
  containerId: string;
  ns: TestNamespace;
  /** The last ADD or DEL that succeeded was an ADD. */
  up: boolean;
  ips: string[];
  busy: boolean;
}

/** Counts that show the storm hit what it meant to hit. */
interface StormStats {
  calls: number;
  adds: number;
  dels: number;
  retried: number;
  lostMidRequest: number;
  givenUp: number;
  kills: number;
  killsDuringStartup: number;
  unexpected: string[];
}

/** Removes every namespace, also when the test failed half-way. */
async function removeAll(namespaces: TestNamespace[]): Promise<void> {
  for (const ns of namespaces) await ns.remove().catch(() => {});
}

/** The start-up reconcile reports the agents logged so far (JSON lines `msg: "reconciled"`). */
async function reconcileReports(node: FlockNode): Promise<Record<string, unknown>[]> {
  return (await node.agentLog()).split("\n")
    .filter((l) => l.includes('"reconciled"'))
    .map((l) => JSON.parse(l));
}

/**
 * Restarts the agent and returns its reconcile report. The report is read after a SIGTERM
 * because the fixture's log file only catches up with an agent's stderr as it exits.
 */
async function restartAndReport(node: FlockNode): Promise<Record<string, unknown>> {
  const since = new Date().toISOString();
  await node.restartAgent();
  await node.kill("SIGTERM");
  try {
    for (let i = 0; i < 100; i++) {
      const report = (await reconcileReports(node)).find((r) => String(r.ts) >= since);
      if (report) return report;
      await sleep(50);
    }
    throw new Error("the restarted agent logged no reconcile report");
  } finally {
    await node.startAgent();
  }
}

/** The lowest host number `n` (≥ 1) for which `format(n)` is not in `held`. */
function lowestFree(held: Set<string>, format: (n: number) => string): string {
  for (let n = 1; n < 65_536; n++) if (!held.has(format(n))) return format(n);
  throw new Error("no free address");
}

Deno.test({
  name: "crash storm: kill -9 the agent at ≥ 20 random points during concurrent ADD/DEL",
  ...ROOT_ONLY,
  async fn() {
    const rng = Prng.fromEnv("crash storm");
    const PODS = 16;
    const WORKERS = 6;
    const KILLS = 21;
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:c5::/64", cidr4: "10.197.0.0/24" },
    });
    const pods: StormPod[] = [];
    try {
      for (let i = 0; i < PODS; i++) {
        pods.push({
          containerId: `storm-${i}`,
          ns: await TestNamespace.create("flk-cs"),
          up: false,
          ips: [],
          busy: false,
        });
      }
      const stats: StormStats = {
        calls: 0,
        adds: 0,
        dels: 0,
        retried: 0,
        lostMidRequest: 0,
        givenUp: 0,
        kills: 0,
        killsDuringStartup: 0,
        unexpected: [],
      };
      const call = async (command: "ADD" | "DEL", pod: StormPod) => {
        const r = await node.cni(command, {
          containerId: pod.containerId,
          netns: pod.ns.path,
          args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=storm;K8S_POD_NAME=${pod.containerId}`,
        });
        stats.calls++;
        if (r.code !== 0) {
          if (r.json?.code === TRY_AGAIN) {
            stats.retried++;
            if (/lost the connection|without an answer/.test(r.json.msg)) stats.lostMidRequest++;
          } else {
            stats.unexpected.push(`${command} ${pod.containerId}: exit ${r.code} ${r.stdout}`);
          }
        }
        return r;
      };
      // DEL must always succeed in the end; the runtime retries it until it does.
      const del = async (pod: StormPod) => {
        for (let attempt = 0; attempt < 400; attempt++) {
          if ((await call("DEL", pod)).code === 0) {
            pod.up = false;
            pod.ips = [];
            stats.dels++;
            return;
          }
          await sleep(rng.between(20, 80));
        }
        throw new Error(`DEL ${pod.containerId} never succeeded`);
      };
      // A failed ADD is retried, or given up with a DEL as containerd does after a failed
      // RunPodSandbox.
      const add = async (pod: StormPod) => {
        for (let attempt = 0; attempt < 400; attempt++) {
          const r = await call("ADD", pod);
          if (r.code === 0) {
            pod.up = true;
            pod.ips = resultIps(r.json);
            stats.adds++;
            return;
          }
          await sleep(rng.between(20, 80));
          if (r.json?.code !== TRY_AGAIN || rng.chance(0.3)) {
            stats.givenUp++;
            return await del(pod);
          }
        }
        throw new Error(`ADD ${pod.containerId} never succeeded`);
      };

      let stormOver = false;
      const worker = async () => {
        while (!stormOver) {
          const idle = pods.filter((p) => !p.busy);
          if (idle.length === 0) {
            await sleep(10);
            continue;
          }
          const pod = rng.pick(idle);
          pod.busy = true;
          try {
            await (pod.up ? del(pod) : add(pod));
          } finally {
            pod.busy = false;
          }
        }
      };
      const killer = async () => {
        try {
          while (stats.kills < KILLS) {
            await sleep(rng.between(50, 350));
            await node.kill("SIGKILL");
            stats.kills++;
            if (rng.chance(0.5)) await sleep(rng.between(0, 200));
            if (rng.chance(0.1)) {
              // Also kill it during start-up (listening, reconciling): an extra kill point.
              await node.startAgent({ waitReady: false });
              await sleep(rng.between(0, 400));
              await node.kill("SIGKILL");
              stats.killsDuringStartup++;
            }
            await node.startAgent();
          }
        } finally {
          stormOver = true;
        }
      };
      const started = performance.now();
      await Promise.all([killer(), ...Array.from({ length: WORKERS }, worker)]);
      const seconds = (performance.now() - started) / 1000;
      console.log(
        `storm: ${seconds.toFixed(1)} s, ${stats.kills} kills (+${stats.killsDuringStartup} ` +
          `during start-up), ${stats.calls} plugin calls, ${stats.adds} ADDs and ${stats.dels} ` +
          `DELs done, ${stats.retried} answered 11 (${stats.lostMidRequest} lost mid-request), ` +
          `${stats.givenUp} ADDs given up`,
      );
      assert.deepEqual(stats.unexpected, [], "every failure while the agent was down is code 11");
      assert.ok(stats.kills >= 20);
      assert.ok(stats.retried > 0, "the kills never hit a plugin call");

      const alive: LivePod[] = pods.filter((p) => p.up).map((p) => ({
        containerId: p.containerId,
        ips: p.ips,
      }));
      console.log(`storm: ${alive.length} of ${PODS} pods alive at the end`);
      await assertNodeHolds(node, alive, "after the storm");
      for (const pod of pods) {
        assert.deepEqual(
          (await podAddresses(pod.ns)).sort(),
          [...pod.ips].sort(),
          `addresses inside ${pod.containerId}'s namespace`,
        );
      }

      // Every surviving pod reaches every other over both families.
      const up = pods.filter((p) => p.up);
      for (const [i, target] of up.entries()) {
        const from = up[(i + 1) % up.length];
        if (from === target) continue;
        for (const ip of target.ips) {
          assert.ok(await ping(from.ns, ip), `${from.containerId} → ${target.containerId} ${ip}`);
        }
      }

      // The storm converged: a fresh agent on this state finds nothing to repair or release.
      const report = await restartAndReport(node);
      assert.equal(report.restored, alive.length, JSON.stringify(report));
      for (const key of ["repaired", "released", "orphanLinks", "orphanRoutes"]) {
        assert.equal(report[key], 0, `reconcile after the storm: ${key}`);
      }

      // No address leaked inside the agent's IPAM either: `lowest` hands out the lowest free one.
      const held = new Set(alive.flatMap((p) => p.ips));
      const probe = pods.find((p) => !p.up);
      if (probe) {
        const r = await node.cni("ADD", {
          containerId: probe.containerId,
          netns: probe.ns.path,
          extraConfig: {
            runtimeConfig: {
              "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ip-algo": "lowest" },
            },
          },
        });
        assert.equal(r.code, 0, r.stdout);
        assert.deepEqual(
          resultIps(r.json).sort(),
          [
            lowestFree(held, (n) => `10.197.0.${n}`),
            lowestFree(held, (n) => `fd00:c5::${n.toString(16)}`),
          ].sort(),
        );
        assert.equal((await node.cni("DEL", { containerId: probe.containerId })).code, 0);
      }

      for (const pod of up) await del(pod);
      await assertNodeHolds(node, [], "after deleting every pod");
    } finally {
      await removeAll(pods.map((p) => p.ns));
    }
  },
});

Deno.test({
  name: "crash at a named step of ADD or DEL (FLOCK_TEST_CRASH_AT): the retry converges",
  ...ROOT_ONLY,
  async fn(t) {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:c6::/64", cidr4: "10.198.0.0/24" },
    });
    await using peerNs = await TestNamespace.create("flk-cp");
    await using podNs = await TestNamespace.create("flk-cp");
    const peer = await addLivePod(node, "peer", peerNs.path);
    // The peer holds ::1 and .1, and released addresses are reusable at once (cooldown 0).
    const podIps = ["10.198.0.2", "fd00:c6::2"];
    const pod = { containerId: "victim", netns: podNs.path };

    /** Restarts the agent armed at `point`, runs `command`, and sees the agent die there. */
    const crashDuring = async (point: CrashPoint, command: "ADD" | "DEL") => {
      await node.kill();
      await node.startAgent({ env: { [CRASH_ENV]: point } });
      const r = await node.cni(command, pod);
      assert.equal(r.code, 1, `${command} must fail while the agent dies: ${r.stdout}`);
      assert.equal(r.json?.code, TRY_AGAIN, r.stdout);
      assert.equal((await agentExit(node)).signal, "SIGKILL", `the agent died at ${point}`);
      await node.kill();
      await node.startAgent();
    };
    const reachable = async () => {
      for (const ip of podIps) assert.ok(await ping(peerNs, ip), `peer → victim ${ip}`);
    };

    for (const point of ["add-after-pending", "add-after-datapath"] as const) {
      await t.step(
        `${point}: restart releases the pending attachment, the retry succeeds`,
        async () => {
          await crashDuring(point, "ADD");
          await assertNodeHolds(node, [peer], `after the crash at ${point}`);
          assert.deepEqual(await podAddresses(podNs), [], "the half-made pod interface is gone");
          const retry = await node.cni("ADD", pod);
          assert.equal(retry.code, 0, retry.stdout);
          assert.deepEqual(resultIps(retry.json).sort(), podIps);
          await reachable();
          assert.equal((await node.cni("DEL", pod)).code, 0);
          await assertNodeHolds(node, [peer]);
        },
      );
    }

    await t.step(
      "add-after-commit: the pod survives the restart, the retry returns it",
      async () => {
        await crashDuring("add-after-commit", "ADD");
        await assertNodeHolds(node, [peer, { containerId: "victim", ips: podIps }]);
        await reachable();
        const retry = await node.cni("ADD", pod);
        assert.equal(retry.code, 0, retry.stdout);
        assert.deepEqual(resultIps(retry.json).sort(), podIps);
        assert.equal((await node.cni("DEL", pod)).code, 0);
        await assertNodeHolds(node, [peer]);
      },
    );

    await t.step(
      "del-after-releasing: the restart finishes the release, the DEL retry succeeds",
      async () => {
        const add = await node.cni("ADD", pod);
        assert.equal(add.code, 0, add.stdout);
        await crashDuring("del-after-releasing", "DEL");
        // The record was durably releasing: the restart's reconcile removed what was left.
        await assertNodeHolds(node, [peer], "after the crash before DEL answered");
        assert.deepEqual(await podAddresses(podNs), [], "the pod interface is gone");
        const retry = await node.cni("DEL", pod);
        assert.equal(retry.code, 0, retry.stdout);
        await assertNodeHolds(node, [peer]);
      },
    );

    await t.step(
      "del-after-teardown: DEL answered, the agent died before releasing; the restart does it",
      async () => {
        const add = await node.cni("ADD", pod);
        assert.equal(add.code, 0, add.stdout);
        await node.kill();
        await node.startAgent({ env: { [CRASH_ENV]: "del-after-teardown" } });
        // The veth goes after the answer, so the DEL succeeds and the agent dies afterwards.
        const del = await node.cni("DEL", pod);
        assert.equal(del.code, 0, del.stdout);
        assert.equal((await agentExit(node)).signal, "SIGKILL", "the agent died after answering");
        await node.kill();
        await node.startAgent();
        await assertNodeHolds(node, [peer], "after the restart");
        // The addresses were released (cooldown 0): a new pod gets the same ones.
        const again = await node.cni("ADD", pod);
        assert.equal(again.code, 0, again.stdout);
        assert.deepEqual(resultIps(again.json).sort(), podIps);
        await reachable();
        assert.equal((await node.cni("DEL", pod)).code, 0);
        await assertNodeHolds(node, [peer]);
      },
    );

    assert.equal((await node.cni("DEL", { containerId: "peer", netns: peerNs.path })).code, 0);
    await node.settled();
    assert.deepEqual(storeRecords(node), []);
    await assertNodeHolds(node, []);
  },
});
