/**
 * The agent in cluster mode against a real kube-apiserver 1.34 (etcd, TLS, RBAC):
 *
 * - the CRD and RBAC from deploy/, the agent authenticated with a TokenRequest token of the
 *   manifests' ServiceAccount (so every call it makes is checked by real RBAC);
 * - pods created in the API with flock annotations; their sandboxes set up through the real CNI
 *   exec path with only CNI_ARGS (no annotations capability): the addresses follow the
 *   annotations, also for an ADD that arrives before the pod reached the informer;
 * - the NodeConfig status shows the allocations;
 * - an agent restart, and an API server restart (and an ADD while it is down), change nothing
 *   for existing pods; a later spec change applies to new pods only.
 *
 * The agent runs in the host namespace (the API server listens on 127.0.0.1) with `--netns`,
 * so every link and route it makes lives in the node namespace.
 */

import assert from "node:assert/strict";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import { type CniOutcome, FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";

const NODE = "flk-kube-node";
const NS = "default";
const A = "flock.fritzlab.net/";

function nodeConfig(name: string, spec: Record<string, unknown>) {
  return {
    apiVersion: "flock.fritzlab.net/v1alpha1",
    kind: "NodeConfig",
    metadata: { name },
    spec,
  };
}

/** A pod bound to `NODE` (no scheduler or kubelet runs: it just sits in the API). */
function podManifest(name: string, annotations: Record<string, string>) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NS, annotations },
    spec: { nodeName: NODE, containers: [{ name: "c", image: "example.invalid/none:1" }] },
  };
}

async function createPod(kube: KubeCluster, name: string, annotations: Record<string, string>) {
  const out = await kube.kubectlOk(["create", "-f", "-", "-o", "json"], {
    stdin: JSON.stringify(podManifest(name, annotations)),
  });
  return JSON.parse(out).metadata.uid as string;
}

function cniArgs(name: string, uid?: string): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=${NS};K8S_POD_NAME=${name}` +
    (uid ? `;K8S_POD_UID=${uid}` : "");
}

function addresses(r: CniOutcome): string[] {
  assert.equal(r.code, 0, `plugin failed: ${r.stdout}${r.stderr}`);
  return (r.json.ips as { address: string }[]).map((i) => i.address).sort();
}

/** The pod side as a user would check it: addresses and MTU of eth0. */
async function podView(pod: TestNamespace) {
  const [link] = await pod.ipJson<
    { mtu: number; addr_info: { local: string; prefixlen: number; scope: string }[] }[]
  >(["addr", "show", "dev", "eth0"]);
  return {
    mtu: link.mtu,
    addrs: link.addr_info.filter((a) => a.scope !== "link").map((a) => `${a.local}/${a.prefixlen}`)
      .sort(),
  };
}

async function nodeConfigObject(kube: KubeCluster, name: string) {
  return JSON.parse(await kube.kubectlOk(["get", "nodeconfig", name, "-o", "json"]));
}

Deno.test({
  name: "kube agent: NodeConfig + pod annotations from the API, status, restarts change nothing",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    await kube.apply([
      nodeConfig(NODE, { cidr6: "fd00:4b::/64", cidr4: "10.75.0.0/24", mtu: 1500 }),
      nodeConfig("flk-other-node", {
        cidr6: "fd00:4c::/64",
        bgp: { asn: 65010, nodeMesh: true },
      }),
      // The other node's address for the BGP mesh comes from its Node object (data only:
      // nothing is sent to it, this test runs no BIRD).
      {
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: "flk-other-node" },
        status: { addresses: [{ type: "InternalIP", address: "fd00:4c::1" }] },
      },
    ]);
    const token = await kube.tokenFor("kube-system", "flock");
    const kubeconfig = await kube.kubeconfigFor(token);

    await using node = await FlockNode.start({
      name: NODE,
      config: { cidr6: "fd00:dead::/64" }, // unused in cluster mode: the API's NodeConfig wins
      kubeconfig,
    });
    const pods: Record<string, TestNamespace> = {};
    /** A sandbox for pod `name`, set up through the plugin with only CNI_ARGS. */
    const attach = async (name: string, uid?: string) => {
      pods[name] = await TestNamespace.create("flk-kp");
      return addresses(
        await node.cni("ADD", {
          containerId: `ctr-${name}`,
          netns: pods[name].path,
          args: cniArgs(name, uid),
        }),
      );
    };
    try {
      // Pinned, auto with an algorithm, IPv6 only, and no annotations at all.
      const wanted: Record<string, Record<string, string>> = {
        "pod-a": { [`${A}ipv6`]: "fd00:4b::a", [`${A}ipv4`]: "10.75.0.10" },
        "pod-b": { [`${A}ipv4`]: "none", [`${A}ip-algo`]: "lowest" },
        "pod-c": {},
      };
      const uids: Record<string, string> = {};
      for (const [name, ann] of Object.entries(wanted)) {
        uids[name] = await createPod(kube, name, ann);
      }
      const got: Record<string, string[]> = {};
      for (const name of Object.keys(wanted)) got[name] = await attach(name, uids[name]);
      assert.deepEqual(got["pod-a"], ["10.75.0.10/32", "fd00:4b::a/128"]);
      assert.equal(got["pod-b"].length, 1);
      assert.match(got["pod-b"][0], /^fd00:4b::[0-9a-f]+\/128$/);
      assert.equal(got["pod-c"].length, 2, "no annotations: both families from the NodeConfig");
      assert.ok(got["pod-c"].some((a) => a.startsWith("10.75.0.")));

      // The ADD-vs-informer race: the runtime calls ADD before the pod reached the informer.
      pods["pod-d"] = await TestNamespace.create("flk-kp");
      const early = node.cni("ADD", {
        containerId: "ctr-pod-d",
        netns: pods["pod-d"].path,
        args: cniArgs("pod-d"),
      });
      await new Promise((r) => setTimeout(r, 300));
      await createPod(kube, "pod-d", { [`${A}ipv6`]: "fd00:4b::d", [`${A}ipv4`]: "none" });
      got["pod-d"] = addresses(await early);
      assert.deepEqual(got["pod-d"], ["fd00:4b::d/128"]);

      // A pod the API server never heard of: "try again later", nothing allocated.
      await using ghost = await TestNamespace.create("flk-kp");
      const r = await node.cni("ADD", {
        containerId: "ctr-ghost",
        netns: ghost.path,
        args: cniArgs("ghost"),
      });
      assert.notEqual(r.code, 0);
      assert.equal(r.json.code, 11, r.stdout);
      assert.match(r.json.msg, /default\/ghost/);
      assert.equal((await node.flockLinks()).length, 4);

      // Status: 4 pods, 4 IPv6 and 2 IPv4 addresses; the printer column shows the pods.
      const status = await eventually(
        "NodeConfig status",
        async () => (await nodeConfigObject(kube, NODE)).status,
        (s) => s?.pods === 4,
      );
      assert.deepEqual(
        { ready: status.ready, reason: status.reason, allocated: status.allocated },
        { ready: true, reason: "", allocated: { ipv6: 4, ipv4: 2 } },
      );
      assert.equal(status.observedGeneration, 1);
      const table = await kube.kubectlOk(["get", "nodeconfigs", NODE]);
      assert.match(table, new RegExp(`${NODE}\\s+fd00:4b::/64\\s+10\\.75\\.0\\.0/24\\s+4\\s`));
      assert.match(await node.agentLog(), /mesh peers changed.*flk-other-node@fd00:4c::1/);

      const before = await snapshot(node, pods);
      assert.ok(await ping(pods["pod-a"], "fd00:4b::d"));
      assert.ok(await ping(pods["pod-c"], "10.75.0.10"));

      // Agent restart (kill -9): nothing changes for running pods.
      await node.restartAgent();
      assert.deepEqual(await snapshot(node, pods), before);
      assert.ok(await ping(pods["pod-a"], "fd00:4b::d"));

      // API server down: the node keeps running, a known pod still gets its annotations.
      await createPod(kube, "pod-e", { [`${A}ipv6`]: "fd00:4b::e" });
      // A watch delivers in milliseconds; give it ample time before the server goes away.
      await new Promise((r) => setTimeout(r, 1_000));
      await kube.stopApiserver();
      assert.deepEqual(await snapshot(node, pods), before);
      got["pod-e"] = await attach("pod-e");
      assert.ok(got["pod-e"].includes("fd00:4b::e/128"), got["pod-e"].join());
      await kube.startApiserver();
      // The informers reconnect (or relist after 410) and the status catches up.
      await eventually(
        "status after the API server restart",
        async () => (await nodeConfigObject(kube, NODE)).status,
        (s) => s?.pods === 5,
        30_000,
      );
      const after = await snapshot(node, pods);
      for (const link of before.links) assert.ok(after.links.includes(link), link);
      for (const route of before.routes) assert.ok(after.routes.includes(route), route);
      // A pod created after the restart is seen by the re-established watch.
      await createPod(kube, "pod-f", { [`${A}ipv6`]: "fd00:4b::f", [`${A}ipv4`]: "none" });
      got["pod-f"] = await attach("pod-f");
      assert.deepEqual(got["pod-f"], ["fd00:4b::f/128"]);
      for (const name of ["pod-a", "pod-b", "pod-c", "pod-d"]) {
        assert.deepEqual(await podView(pods[name]), before.pods[name], name);
      }

      // A spec change (MTU, new IPv4 range) applies to new pods; running ones keep theirs.
      await kube.kubectlOk([
        "patch",
        "nodeconfig",
        NODE,
        "--type=merge",
        "-p",
        JSON.stringify({ spec: { mtu: 1400, cidr4: "10.76.0.0/24" } }),
      ]);
      const changed = await eventually(
        "the spec change in status",
        async () => (await nodeConfigObject(kube, NODE)).status,
        (s) => s?.observedGeneration === 2,
      );
      // pod-a, pod-c and pod-e hold IPv4 addresses of the old range.
      assert.match(changed.reason, /^3 running pods hold addresses outside/);
      await createPod(kube, "pod-g", {});
      got["pod-g"] = await attach("pod-g");
      assert.ok(got["pod-g"].some((a) => a.startsWith("10.76.0.")), got["pod-g"].join());
      assert.equal((await podView(pods["pod-g"])).mtu, 1400);
      for (const name of ["pod-a", "pod-b", "pod-c", "pod-d"]) {
        assert.deepEqual(await podView(pods[name]), before.pods[name], `${name} after the change`);
      }
      assert.ok(await ping(pods["pod-g"], "10.75.0.10"), "old and new ranges still route");
      assert.match(
        await node.agentLog(),
        /cidr4 changed from 10\.75\.0\.0\/24 to 10\.76\.0\.0\/24/,
      );

      // DEL of everything leaves the node clean, and the status says so.
      for (const [name, ns] of Object.entries(pods)) {
        const d = await node.cni("DEL", {
          containerId: `ctr-${name}`,
          netns: ns.path,
          args: cniArgs(name),
        });
        assert.equal(d.code, 0, d.stdout);
      }
      assert.deepEqual(await node.flockLinks(), []);
      const final = await eventually(
        "status after DEL",
        async () => (await nodeConfigObject(kube, NODE)).status,
        (s) => s?.pods === 0,
      );
      assert.deepEqual(final.allocated, { ipv6: 0, ipv4: 0 });
      assert.equal(final.reason, "");
      // BGP fields this agent (no BIRD) does not have, written by someone else: deleted, and
      // then the status stays put (no rewrite loop).
      await kube.kubectlOk([
        "patch",
        "nodeconfig",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        JSON.stringify({
          status: {
            bgpSessions: 3,
            bgpSessionsUp: 1,
            lastBirdReload: { time: "2026-01-01T00:00:00Z", ok: false, message: "stale" },
          },
        }),
      ]);
      await eventually(
        "stale BGP fields deleted",
        async () => (await nodeConfigObject(kube, NODE)).status,
        (s) => ["bgpSessions", "bgpSessionsUp", "lastBirdReload"].every((f) => !(f in s)),
      );
      const settled = (await nodeConfigObject(kube, NODE)).metadata.resourceVersion;
      await new Promise((r) => setTimeout(r, 2_500));
      assert.equal(
        (await nodeConfigObject(kube, NODE)).metadata.resourceVersion,
        settled,
        "the status is not rewritten once it matches",
      );
      // The agent never made anything in the host namespace.
      const host = await new Deno.Command("ip", { args: ["-j", "link", "show"] }).output();
      const hostLinks = JSON.parse(new TextDecoder().decode(host.stdout)) as { ifname: string }[];
      assert.deepEqual(hostLinks.filter((l) => l.ifname.startsWith("flock")), []);
    } catch (e) {
      console.error(await node.agentLog());
      throw e;
    } finally {
      for (const ns of Object.values(pods)) await ns.remove().catch(() => {});
    }
  },
});

/** What a user would compare before and after a restart: links, routes, each pod's eth0. */
async function snapshot(node: FlockNode, pods: Record<string, TestNamespace>) {
  const views: Record<string, Awaited<ReturnType<typeof podView>>> = {};
  for (const [name, ns] of Object.entries(pods)) views[name] = await podView(ns);
  return {
    links: (await node.flockLinks()).sort(),
    routes: (await node.flockRoutes()).map((r) => `${r.dst} ${r.dev ?? r.type}`).sort(),
    pods: views,
  };
}

Deno.test({
  name: "kube agent: no NodeConfig → Node.spec.podCIDRs after the wait; a later NodeConfig wins",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    const name = "flk-kube-plain";
    await kube.apply({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name },
      spec: { podCIDRs: ["fd00:4d::/64", "10.77.0.0/24"], podCIDR: "fd00:4d::/64" },
    });
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor("kube-system", "flock"));
    await using node = await FlockNode.start({
      name,
      config: { cidr6: "fd00:dead::/64" },
      kubeconfig,
      agentArgs: ["--nodeconfig-wait-ms", "1500"],
      startAgent: false,
    });
    await node.startAgent({ waitReady: false });
    // Not ready while it waits: "try again later", with the reason.
    const early = await eventually(
      "the agent's not-ready answer",
      () => node.cni("STATUS"),
      (r) => /waiting for NodeConfig flk-kube-plain/.test(r.stdout),
      10_000,
    );
    assert.notEqual(early.code, 0);
    await node.waitReady();
    assert.match(await node.agentLog(), /no NodeConfig for this node; using Node.spec.podCIDRs/);
    // SIGHUP (a reload habit, or a terminal hang-up) must not end a cluster-mode agent.
    node.agent!.kill("SIGHUP");
    await eventually(
      "the SIGHUP to be logged",
      () => node.agentLog(),
      (log) => /SIGHUP ignored: in cluster mode the NodeConfig object is the config/.test(log),
      5_000,
    );
    assert.equal((await node.cni("STATUS")).code, 0, "still serving after SIGHUP");
    await using pod = await TestNamespace.create("flk-kp");
    const r = await node.cni("ADD", { containerId: "ctr-plain", netns: pod.path });
    const ips = addresses(r);
    assert.equal(ips.length, 2);
    assert.ok(ips.some((a) => a.startsWith("fd00:4d::")), ips.join());
    assert.ok(ips.some((a) => a.startsWith("10.77.0.")), ips.join());

    // A NodeConfig that appears later takes over for new pods; the running pod stays.
    await kube.apply(nodeConfig(name, { cidr6: "fd00:4d::/64", cidr4: "10.77.0.0/24", mtu: 1400 }));
    await eventually(
      "the NodeConfig to be applied",
      async () => (await nodeConfigObject(kube, name)).status,
      (s) => s?.ready === true && s?.pods === 1 && s?.observedGeneration === 1,
    );
    await using pod2 = await TestNamespace.create("flk-kp");
    addresses(await node.cni("ADD", { containerId: "ctr-plain-2", netns: pod2.path }));
    assert.equal((await podView(pod2)).mtu, 1400);
    assert.equal((await podView(pod)).mtu, 1500);
    for (const [id, ns] of [["ctr-plain", pod], ["ctr-plain-2", pod2]] as const) {
      assert.equal((await node.cni("DEL", { containerId: id, netns: ns.path })).code, 0);
    }
  },
});
