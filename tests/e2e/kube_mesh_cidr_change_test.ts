/**
 * A node's pod-CIDR change in a live BGP node mesh (cluster mode, real kube-apiserver, BIRD on
 * every node): node B moves to new CIDRs while a pod still holds addresses in the old ones.
 *
 * - B keeps announcing its old summaries while the pod lives (cidr_change_test.ts) and publishes
 *   them in `status.drainingCIDRs`; node A's mesh import filter accepts them from B on that
 *   ground, so a pod on A keeps reaching B's old pod over IPv6 and IPv4 throughout the change.
 * - Once the old pod is deleted, B publishes no draining CIDR and A's filter is strict again:
 *   B's BIRD made to announce the old range anyway (a rogue bird.conf) is refused by A.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { ping, TestNamespace } from "../helpers/flock.ts";
import { type BgpLabNode, type BgpNodePlan, startBgpNode } from "../helpers/bgp_lab.ts";
import { Fabric } from "../helpers/fabric.ts";
import { birdRoutes, meshObjects } from "../helpers/kube_mesh.ts";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import { birdcPath } from "../helpers/tools.ts";

/** Bound of every wait for the mesh to converge. */
const MESH_WAIT_MS = 30_000;

const OLD = { cidr6: "fd00:60:2::/64", cidr4: "10.60.2.0/24" };
const NEW = { cidr6: "fd00:61:2::/64", cidr4: "10.61.2.0/24" };

function plan(i: number, cidrs: { cidr6: string; cidr4: string }): BgpNodePlan {
  return {
    name: `flk-mcc-${i}`,
    ipv4: `10.0.0.${20 + i}`,
    ipv6: `fd00:a::${20 + i}`,
    spec: { ...cidrs, bgp: { asn: 64512, nodeMesh: true } },
  };
}

async function drainingCIDRs(kube: KubeCluster, name: string): Promise<string[] | undefined> {
  const obj = JSON.parse(await kube.kubectlOk(["get", "nodeconfig", name, "-o", "json"]));
  return obj.status?.drainingCIDRs;
}

function birdc(n: BgpLabNode, ...args: string[]): Promise<string> {
  return runOk([birdcPath(), "-s", n.bird.socketPath, ...args]).then((r) => r.stdout);
}

Deno.test({
  name: "kube mesh: a node's old pods stay reachable from the other nodes through a CIDR change",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using cleanup = new AsyncDisposableStack();
    const kube = cleanup.use(await startKubeWithFlock());
    const fabric = cleanup.use(await Fabric.start());
    const plans = [plan(1, { cidr6: "fd00:60:1::/64", cidr4: "10.60.1.0/24" }), plan(2, OLD)];
    await kube.apply(plans.flatMap((p) => meshObjects(p)));
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor("kube-system", "flock"));
    const started = await Promise.allSettled(
      plans.map((p) => startBgpNode(fabric, p, cleanup, { kubeconfig })),
    );
    const failed = started.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    const [a, b] = started.map((r) => (r as PromiseFulfilledResult<BgpLabNode>).value);
    const step = async (name: string, fn: () => Promise<void>) => {
      if (!await t.step(name, fn)) throw new Error(`step failed: ${name}`);
    };
    const podA = cleanup.use(await TestNamespace.create("flk-mccp"));
    const podB = cleanup.use(await TestNamespace.create("flk-mccp"));
    let oldAddrs: string[] = [];

    try {
      await step("A learns B's summaries; a pod on A reaches a pod on B", async () => {
        await eventually(
          "A's kernel routes from BIRD",
          () => birdRoutes(a),
          (got) => got.join() === [OLD.cidr4, OLD.cidr6].join(),
          MESH_WAIT_MS,
        );
        const ra = await a.flock.cni("ADD", { containerId: "pod-a", netns: podA.path });
        assert.equal(ra.code, 0, ra.stdout + ra.stderr);
        const rb = await b.flock.cni("ADD", { containerId: "pod-b-old", netns: podB.path });
        assert.equal(rb.code, 0, rb.stdout + rb.stderr);
        oldAddrs = (rb.json.ips as { address: string }[]).map((i) => i.address.split("/")[0]);
        for (const address of oldAddrs) assert.ok(await ping(podA, address), `A -> ${address}`);
      });

      await step("B moves to new CIDRs: its old pod stays reachable from A", async () => {
        // A's kernel, read over and over through the change: the route to B's old range must
        // never go, not even before B has published what it drains.
        let watching = true;
        const samples: string[][] = [];
        const watcher = (async () => {
          while (watching) {
            samples.push(await birdRoutes(a));
            await new Promise((r) => setTimeout(r, 20));
          }
        })();
        await kube.kubectlOk([
          "patch",
          "nodeconfig",
          b.plan.name,
          "--type=merge",
          "-p",
          JSON.stringify({ spec: NEW }),
        ]);
        const want = [NEW.cidr4, OLD.cidr4, NEW.cidr6, OLD.cidr6].sort();
        await eventually(
          "B publishes its old CIDRs as draining",
          () => drainingCIDRs(kube, b.plan.name),
          (got) => got?.join() === [OLD.cidr4, OLD.cidr6].join(),
          MESH_WAIT_MS,
        );
        await eventually(
          "A's kernel routes: B's new and old summaries",
          () => birdRoutes(a),
          (got) => got.join() === want.join(),
          MESH_WAIT_MS,
        );
        watching = false;
        await watcher;
        const gaps = samples.filter((r) => !r.includes(OLD.cidr6) || !r.includes(OLD.cidr4));
        assert.deepEqual(
          gaps,
          [],
          `A lost B's old range during the change (${samples.length} reads)`,
        );
        for (const address of oldAddrs) assert.ok(await ping(podA, address), `A -> ${address}`);
      });

      await step("the old pod deleted: A no longer accepts B's old range", async () => {
        const del = await b.flock.cni("DEL", { containerId: "pod-b-old", netns: podB.path });
        assert.equal(del.code, 0, del.stdout + del.stderr);
        await eventually(
          "B publishes no draining CIDR",
          () => drainingCIDRs(kube, b.plan.name),
          (got) => got === undefined,
          MESH_WAIT_MS,
        );
        await eventually(
          "A's kernel routes: B's new summaries only",
          () => birdRoutes(a),
          (got) => got.join() === [NEW.cidr4, NEW.cidr6].join(),
          MESH_WAIT_MS,
        );
        // A rogue B: its BIRD announces the old range again (blackholes, filters widened).
        for (const cidr of [OLD.cidr6, OLD.cidr4]) {
          await b.flock.ns.ip(["route", "replace", "blackhole", cidr, "proto", "201"]);
        }
        const conf = await Deno.readTextFile(b.bird.configPath);
        const rogue = conf
          .replace(/^define NODE_CIDRS6 = \[ /m, `define NODE_CIDRS6 = [ ${OLD.cidr6}, `)
          .replace(/^define NODE_CIDRS4 = \[ /m, `define NODE_CIDRS4 = [ ${OLD.cidr4}, `);
        assert.notEqual(rogue, conf);
        await Deno.writeTextFile(b.bird.configPath, rogue);
        assert.match(await birdc(b, "configure"), /Reconfigured/);
        const meshToA = `mesh_${a.plan.ipv6.replace(/[^0-9a-z]/g, "_")}`;
        await eventually(
          "B exports its old range to A",
          () => birdc(b, "show", "route", "export", meshToA, "all"),
          (out) => out.includes(OLD.cidr6) && out.includes(OLD.cidr4),
          MESH_WAIT_MS,
        );
        // The CRD schema refuses a draining CIDR that is no CIDR.
        const bad = await kube.kubectl([
          "patch",
          "nodeconfig",
          b.plan.name,
          "--subresource=status",
          "--type=merge",
          "-p",
          JSON.stringify({ status: { drainingCIDRs: ["10.60.2.1/24"] } }),
        ]);
        assert.equal(bad.success, false, bad.stdout);
        assert.match(bad.stderr, /no bits set after the prefix length/);
        // Give A the time it had above to learn a route, then check it learned none.
        await new Promise((r) => setTimeout(r, 3_000));
        assert.deepEqual(await birdRoutes(a), [NEW.cidr4, NEW.cidr6]);
      });
    } catch (err) {
      for (const n of [a, b]) {
        console.error(`--- ${n.plan.name} agent log\n${(await n.flock.agentLog()).slice(-3000)}`);
        console.error(`--- ${n.plan.name} bird log\n${(await n.bird.log()).slice(-2000)}`);
      }
      throw err;
    }
  },
});
