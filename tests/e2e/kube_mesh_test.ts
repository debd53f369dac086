/**
 * A live BGP node mesh in cluster mode, against a real kube-apiserver (etcd, TLS, RBAC):
 *
 * - three node namespaces on one bridge (no router), each with BIRD and an agent in cluster mode
 *   (a TokenRequest token of deploy/'s ServiceAccount) that renders and reloads that BIRD;
 * - NodeConfigs with `bgp.nodeMesh` and no explicit peer, Node objects with IPv4 and IPv6
 *   InternalIPs: the agents peer with each other on their own;
 * - what an operator checks: the other nodes' summaries in every kernel (`proto bird`), pods on
 *   different nodes pinging over IPv6 and IPv4, `status.bgpSessionsUp` and the BGP-Up column,
 *   the `Ready` and `BGPEstablished` conditions;
 * - a fourth node joins (its Node lists IPv6 first: the sessions agree on the family anyway):
 *   the others peer with it without restarting their existing sessions; its Node deleted and
 *   registered again (as kubelet does): no session restarts, no route is withdrawn, also past the
 *   grace; its NodeConfig deleted for good: the others drop it once the grace is over.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { flockStatusJson } from "../helpers/status_probe.ts";
import { ping, TestNamespace } from "../helpers/flock.ts";
import { type BgpLabNode, type BgpNodePlan, startBgpNode } from "../helpers/bgp_lab.ts";
import { Fabric } from "../helpers/fabric.ts";
import { birdRoutes, meshObjects } from "../helpers/kube_mesh.ts";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import { bgpSessions } from "../../bird/control.ts";
import { birdcPath } from "../helpers/tools.ts";

/** Bound of every wait for the mesh to converge (it takes a few seconds). */
const MESH_WAIT_MS = 30_000;

/**
 * How long the agents keep a mesh peer whose Node or NodeConfig was deleted (60 s by default;
 * shorter here so the test does not wait a minute for the drop).
 */
const GRACE_MS = 6_000;
const AGENT_ENV = { FLOCK_DELETED_PEER_GRACE_MS: String(GRACE_MS) };

/** One AS for the whole mesh (iBGP, as a node mesh usually is). */
const ASN = 64512;

function plan(i: number): BgpNodePlan {
  return {
    name: `flk-mesh-${i}`,
    ipv4: `10.0.0.${10 + i}`,
    ipv6: `fd00:a::${10 + i}`,
    spec: {
      cidr6: `fd00:50:${i}::/64`,
      cidr4: `10.50.${i}.0/24`,
      bgp: { asn: ASN, nodeMesh: true },
    },
  };
}

/** What the other nodes of `among` announce: their summaries. */
function othersSummaries(n: BgpLabNode, among: BgpLabNode[]): string[] {
  return among.filter((o) => o !== n).flatMap((o) => [o.plan.spec.cidr6!, o.plan.spec.cidr4!])
    .sort();
}

/** Mesh sessions of a node's BIRD: neighbour address → established, since. */
async function meshSessions(n: BgpLabNode) {
  const sessions = await bgpSessions(n.bird.socketPath, { birdcPath: birdcPath() });
  return Object.fromEntries(
    sessions.map((
      s,
    ) => [s.neighborAddress ?? s.name, { up: s.established, since: s.since?.getTime() }]),
  );
}

type MeshSessions = Awaited<ReturnType<typeof meshSessions>>;

/** A node's mesh sessions and when they were read. */
interface MeshSnapshot {
  takenAt: number;
  sessions: MeshSessions;
}

/** How old every session must be before a snapshot counts (see {@link assertNotRestarted}). */
const SNAPSHOT_MIN_AGE_MS = 2_000;

/**
 * A node's mesh sessions, read once every one of them has been up for {@link SNAPSHOT_MIN_AGE_MS}:
 * only then can a session that restarts after the snapshot be told from one that did not.
 */
function meshSnapshot(n: BgpLabNode): Promise<MeshSnapshot> {
  return eventually(
    `${n.plan.name}: every mesh session up for ${SNAPSHOT_MIN_AGE_MS} ms`,
    async () => {
      const takenAt = Date.now();
      return { takenAt, sessions: await meshSessions(n) };
    },
    ({ takenAt, sessions }) =>
      Object.values(sessions).every((s) =>
        s.up && s.since !== undefined && s.since <= takenAt - SNAPSHOT_MIN_AGE_MS
      ),
    MESH_WAIT_MS,
  );
}

/**
 * Each of `peers`' sessions in `after` is still up and is the one of `before`, not one that came
 * up again after `before` was taken.
 *
 * BIRD does not store the `since` it prints: it prints the wall clock now minus the monotonic
 * time since the change, to the second (`iso long`), reading the two clocks apart (and NTP moves
 * the wall clock), so the same unchanged session may print one second later in a later call. A
 * session that restarted after the snapshot prints that second or a later one.
 */
function assertNotRestarted(
  n: BgpLabNode,
  before: MeshSnapshot,
  after: MeshSessions,
  peers = Object.keys(before.sessions),
): void {
  const snapshotSecond = Math.floor(before.takenAt / 1000) * 1000;
  for (const peer of peers) {
    const [b, a] = [before.sessions[peer], after[peer]];
    const what = `${n.plan.name}: session to ${peer} restarted ` +
      `(since ${b?.since} -> ${a?.since}, first read at ${before.takenAt})`;
    assert.ok(b?.up && b.since !== undefined, `${n.plan.name}: no session to ${peer} before`);
    assert.ok(a?.up && a.since !== undefined, what);
    assert.ok(a.since < snapshotSecond && Math.abs(a.since - b.since) <= 1000, what);
  }
}

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  lastTransitionTime: string;
}

async function nodeConfigStatus(kube: KubeCluster, name: string) {
  const obj = JSON.parse(await kube.kubectlOk(["get", "nodeconfig", name, "-o", "json"]));
  return (obj.status ?? {}) as {
    bgpSessionsUp?: number;
    bgpSessions?: number;
    conditions?: Condition[];
  };
}

function condition(status: { conditions?: Condition[] }, type: string): Condition | undefined {
  return status.conditions?.find((c) => c.type === type);
}

/** `kubectl get nodeconfigs` as an operator reads it: name → column → value. */
async function printerTable(kube: KubeCluster): Promise<Record<string, Record<string, string>>> {
  const lines = (await kube.kubectlOk(["get", "nodeconfigs"])).trim().split("\n");
  const header = lines[0].trim().split(/\s+/);
  return Object.fromEntries(
    lines.slice(1).map((line) => {
      const cols = line.trim().split(/\s+/);
      return [cols[0], Object.fromEntries(header.map((h, i) => [h, cols[i]]))];
    }),
  );
}

/** Every node has `want` sessions, all established, in BIRD and in its NodeConfig status. */
async function waitMeshUp(kube: KubeCluster, nodes: BgpLabNode[], want: number): Promise<void> {
  for (const n of nodes) {
    await eventually(
      `${n.plan.name}: ${want} established sessions in BIRD`,
      () => meshSessions(n),
      (s) => Object.values(s).length === want && Object.values(s).every((x) => x.up),
      MESH_WAIT_MS,
    );
    await eventually(
      `${n.plan.name}: status.bgpSessionsUp = ${want}`,
      () => nodeConfigStatus(kube, n.plan.name),
      (s) =>
        s.bgpSessionsUp === want && s.bgpSessions === want &&
        condition(s, "BGPEstablished")?.status === "True",
      20_000,
    );
  }
}

Deno.test({
  name: "kube mesh: agents in cluster mode peer their BIRDs in a live node mesh",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using cleanup = new AsyncDisposableStack();
    const kube = cleanup.use(await startKubeWithFlock());
    const fabric = cleanup.use(await Fabric.start());
    const plans = [plan(1), plan(2), plan(3)];
    await kube.apply(plans.flatMap((p) => meshObjects(p)));
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor("kube-system", "flock"));
    const start = (p: BgpNodePlan) =>
      startBgpNode(fabric, p, cleanup, { kubeconfig, env: AGENT_ENV });
    // All settled before going on: a node still starting must not outlive the cleanup.
    const started = await Promise.allSettled(plans.map(start));
    const failed = started.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    const nodes = started.map((r) => (r as PromiseFulfilledResult<BgpLabNode>).value);
    const all: BgpLabNode[] = [...nodes];
    // A failed step ends the test (later steps build on it) and prints the logs below.
    const step = async (name: string, fn: () => Promise<void>) => {
      if (!await t.step(name, fn)) throw new Error(`step failed: ${name}`);
    };
    const podNs: TestNamespace[] = [];
    const podAddrs: string[][] = [];

    try {
      await step("every node learns the other two nodes' summaries into its kernel", async () => {
        for (const n of nodes) {
          await eventually(
            `${n.plan.name} kernel routes from BIRD`,
            () => birdRoutes(n),
            (got) => JSON.stringify(got) === JSON.stringify(othersSummaries(n, nodes)),
            MESH_WAIT_MS,
          );
        }
        // The sessions run over IPv6 (both ends have an IPv6 InternalIP) and still carry IPv4.
        const sessions = await meshSessions(nodes[0]);
        assert.deepEqual(Object.keys(sessions).sort(), ["fd00:a::12", "fd00:a::13"]);
        const [route4] = await nodes[0].flock.ns.ipJson<
          { via?: { family: string; host: string } }[]
        >(
          ["-4", "route", "show", "10.50.2.0/24", "proto", "bird"],
        );
        assert.deepEqual(route4?.via, { family: "inet6", host: "fd00:a::12" }, "IPv4 via IPv6");
      });

      await step("router ids: each node's IPv4 InternalIP, as flock status shows", async () => {
        for (const n of nodes) {
          const want = n.plan.ipv4!;
          const conf = await Deno.readTextFile(n.bird.configPath);
          assert.match(conf, new RegExp(`^router id ${want.replaceAll(".", "\\.")};$`, "m"));
          const bgp = (await flockStatusJson(n.flock)).bgp!;
          assert.deepEqual([bgp.routerId, bgp.routerIdSource], [want, "nodeInternalIP"]);
        }
      });

      await step("pods on different nodes ping each other over IPv6 and IPv4", async () => {
        for (const n of nodes) {
          const ns = cleanup.use(await TestNamespace.create("flk-meshp"));
          const r = await n.flock.cni("ADD", { containerId: `pod-${n.plan.name}`, netns: ns.path });
          assert.equal(r.code, 0, r.stdout + r.stderr);
          podNs.push(ns);
          podAddrs.push((r.json.ips as { address: string }[]).map((i) => i.address.split("/")[0]));
        }
        for (const [from, to] of [[0, 1], [1, 2], [2, 0]]) {
          for (const address of podAddrs[to]) {
            assert.ok(await ping(podNs[from], address), `pod on node ${from + 1} -> ${address}`);
          }
        }
      });

      const readySince: Record<string, string> = {};
      await step(
        "status: bgpSessionsUp = 2, the BGP-Up column, Ready and BGPEstablished",
        async () => {
          await waitMeshUp(kube, nodes, 2);
          const table = await printerTable(kube);
          for (const n of nodes) {
            assert.equal(table[n.plan.name]["BGP-UP"], "2", JSON.stringify(table[n.plan.name]));
            assert.equal(table[n.plan.name]["READY"], "true");
            const s = await nodeConfigStatus(kube, n.plan.name);
            const ready = condition(s, "Ready")!;
            assert.deepEqual([ready.status, ready.reason, ready.message], [
              "True",
              "Serving",
              "serving CNI requests",
            ]);
            assert.match(ready.lastTransitionTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
            const bgp = condition(s, "BGPEstablished")!;
            assert.deepEqual([bgp.reason, bgp.message], [
              "AllSessionsEstablished",
              "2 of 2 BGP sessions established",
            ]);
            // Distinct InternalIPs, distinct router ids: no collision reported.
            assert.equal(condition(s, "RouterIDUnique")?.status, "True");
            readySince[n.plan.name] = ready.lastTransitionTime;
          }
          // What an operator scripts: wait on the conditions.
          await kube.kubectlOk([
            "wait",
            "--for=condition=Ready",
            "--for=condition=BGPEstablished",
            "--timeout=10s",
            ...nodes.map((n) => `nodeconfig/${n.plan.name}`),
          ]);
        },
      );

      await step("an agent restart leaves every mesh session alone", async () => {
        const before = await Promise.all(nodes.map(meshSnapshot));
        // As restartAgent(), with the same environment.
        await nodes[0].flock.kill("SIGKILL");
        await nodes[0].flock.startAgent({ env: AGENT_ENV });
        // The restarted agent renders the same bird.conf (mesh included): nothing to reload.
        await eventually(
          "the restarted agent's status",
          () => nodeConfigStatus(kube, nodes[0].plan.name),
          (s) => s.bgpSessionsUp === 2,
        );
        await new Promise((r) => setTimeout(r, 3_000));
        for (const [i, n] of nodes.entries()) {
          const after = await meshSessions(n);
          assert.deepEqual(
            Object.keys(after).sort(),
            Object.keys(before[i].sessions).sort(),
            `${n.plan.name}: the same peers`,
          );
          assertNotRestarted(n, before[i], after);
        }
      });

      await step(
        "a 4th node joins: the others peer with it, existing sessions stay up",
        async () => {
          const before = await Promise.all(nodes.map(meshSnapshot));
          for (const s of before.flatMap((b) => Object.values(b.sessions))) {
            assert.ok(s.since !== undefined && s.since > 0, "BIRD says when each session came up");
          }
          const p4 = plan(4);
          await kube.apply(meshObjects(p4, true));
          const n4 = await start(p4);
          all.push(n4);
          await waitMeshUp(kube, all, 3);
          for (const n of all) {
            await eventually(
              `${n.plan.name} kernel routes with node 4`,
              () => birdRoutes(n),
              (got) => JSON.stringify(got) === JSON.stringify(othersSummaries(n, all)),
              MESH_WAIT_MS,
            );
          }
          // Its Node lists IPv6 first; the router id is its IPv4 InternalIP all the same.
          assert.match(await Deno.readTextFile(n4.bird.configPath), /^router id 10\.0\.0\.14;$/m);
          for (const [i, n] of nodes.entries()) {
            assert.match(
              await Deno.readTextFile(n.bird.configPath),
              /neighbor fd00:a::14 as 64512;/,
            );
            assertNotRestarted(n, before[i], await meshSessions(n));
          }
        },
      );

      await step("node 4's Node deleted and registered again: no session restarts", async () => {
        const before = await Promise.all(all.map(meshSnapshot));
        const check = async (when: string) => {
          for (const [i, n] of all.entries()) {
            assertNotRestarted(n, before[i], await meshSessions(n));
            assert.deepEqual(await birdRoutes(n), othersSummaries(n, all), `${when}: routes`);
          }
        };
        await kube.kubectlOk(["delete", "node", plan(4).name]);
        await new Promise((r) => setTimeout(r, GRACE_MS / 2));
        await check("Node deleted");
        for (const n of nodes) {
          assert.match(await Deno.readTextFile(n.bird.configPath), /neighbor fd00:a::14 as/);
        }
        assert.match(await nodes[0].flock.agentLog(), /mesh peer's Node deleted; keeping/);
        await kube.apply(meshObjects(plan(4), true)[1]);
        // Past the grace of the deletion: the Node is back, so nothing may expire.
        await new Promise((r) => setTimeout(r, GRACE_MS / 2 + 1_500));
        await check("Node back");
      });

      await step("deleting a NodeConfig removes that peer once the grace is over", async () => {
        const before = await Promise.all(nodes.map(meshSnapshot));
        const deletedAt = Date.now();
        await kube.kubectlOk(["delete", "nodeconfig", plan(4).name]);
        for (const [i, n] of nodes.entries()) {
          await eventually(
            `${n.plan.name} drops node 4`,
            () => meshSessions(n),
            (s) =>
              Object.keys(s).sort().join() ===
                nodes.filter((o) => o !== n).map((o) => o.plan.ipv6).sort().join(),
            MESH_WAIT_MS,
          );
          if (i === 0) {
            const keptMs = Date.now() - deletedAt;
            console.log(`node 4 kept by node 1 for ${keptMs} ms after its NodeConfig went`);
            assert.ok(keptMs >= GRACE_MS, `node 4 dropped after ${keptMs} ms`);
          }
          assert.doesNotMatch(await Deno.readTextFile(n.bird.configPath), /fd00:a::14/);
          await eventually(
            `${n.plan.name} kernel routes without node 4`,
            () => birdRoutes(n),
            (got) => JSON.stringify(got) === JSON.stringify(othersSummaries(n, nodes)),
            MESH_WAIT_MS,
          );
          const after = await meshSessions(n);
          assertNotRestarted(n, before[i], after, Object.keys(after));
        }
        await waitMeshUp(kube, nodes, 2);
        // Ready never flipped through all of this: its transition time stayed put.
        for (const n of nodes) {
          const ready = condition(await nodeConfigStatus(kube, n.plan.name), "Ready")!;
          assert.equal(ready.lastTransitionTime, readySince[n.plan.name]);
        }
      });
    } catch (err) {
      for (const n of all) {
        console.error(`--- ${n.plan.name} agent log\n${(await n.flock.agentLog()).slice(-3000)}`);
        console.error(`--- ${n.plan.name} bird log\n${(await n.bird.log()).slice(-2000)}`);
      }
      throw err;
    }
  },
});
