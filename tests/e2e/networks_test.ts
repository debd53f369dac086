/**
 * Two CNI networks served by one flock agent, and flock chained after another plugin: what an
 * operator with a second flock conflist (a runtime with two networks, Multus attaching a second
 * flock network) or a conflist with a plugin before flock sees.
 *
 * - cni.dev/valid-attachments lists the attachments *of the network GC was called for*: a GC of
 *   one network must leave every pod of the other attached and reachable.
 * - An attachment is the runtime's (network, container ID, ifname): an ADD, CHECK or DEL naming
 *   another network must not take over, pass for, or tear down the attachment flock made for the
 *   first one.
 * - ADD after an earlier plugin prints that plugin's result followed by flock's own entries.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import {
  cniCacheEntries,
  cnitool,
  type CnitoolCommand,
  cnitoolContainerId,
  removeCniCache,
  writeConflist,
} from "../helpers/cnitool.ts";
import { referencePluginDir } from "../helpers/tools.ts";
import { editStore, resultIps, storeRecords } from "../helpers/node_state.ts";
import { assertCniError } from "../helpers/cni_output.ts";

/**
 * The node's uplink addresses: the node pings its pods from them (with no global IPv4 address
 * the node would have no source for an IPv4 ping).
 */
const UPLINK = {
  ipv6: { node: "fd00:ff::2/64", peer: "fd00:ff::1/64" },
  ipv4: { node: "192.0.2.2/24", peer: "192.0.2.1/24" },
};

/** A flock node with extra conflists (named `<node network>-<suffix>`) that cnitool can use. */
class NetworksBench implements AsyncDisposable {
  readonly networks: string[] = [];
  readonly netconfPath: string;

  constructor(readonly node: FlockNode) {
    this.netconfPath = join(node.dir, "networks-net.d");
  }

  /** Writes flock's installed conflist as network `suffix`, `before` plugins ahead of flock. */
  async network(suffix: string, before: Record<string, unknown>[] = []): Promise<string> {
    const name = `${this.node.networkName}-${suffix}`;
    const conflist = { ...await this.node.conflist(), name } as Record<string, unknown>;
    // Debian's reference plugins speak up to 1.0.0: a chain with them cannot pick 1.1.0.
    if (before.length > 0) delete conflist.cniVersions;
    conflist.plugins = [...before, ...conflist.plugins as Record<string, unknown>[]];
    await writeConflist(this.netconfPath, conflist);
    this.networks.push(name);
    return name;
  }

  /** `cnitool COMMAND NETWORK POD` in the node namespace (flock and the reference plugins). */
  cnitool(command: CnitoolCommand, network: string, pod: TestNamespace) {
    return cnitool(command, network, pod, {
      hostNetns: this.node.ns,
      netconfPath: this.netconfPath,
      cniPath: [this.node.binDir, referencePluginDir()],
    });
  }

  /** `container/ifname@network` of every attachment in the agent's store, sorted. */
  async attachments(): Promise<string[]> {
    await this.node.settled();
    return storeRecords(this.node).map((a) => `${a.containerId}/${a.ifname}`).sort();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.node.remove();
    for (const network of this.networks) await removeCniCache(network);
  }
}

Deno.test({
  name: "two flock networks: a GC of one leaves the other's pod attached and reachable",
  ...ROOT_ONLY,
  async fn() {
    await using bench = new NetworksBench(
      await FlockNode.start({
        config: { cidr6: "fd00:4e::/64", cidr4: "10.78.0.0/24" },
        nodeOptions: UPLINK,
      }),
    );
    const { node } = bench;
    const netA = await bench.network("a");
    const netB = await bench.network("b");
    await using podA = await TestNamespace.create("flk-nwa");
    await using podB = await TestNamespace.create("flk-nwb");
    const addA = await bench.cnitool("add", netA, podA);
    assert.equal(addA.code, 0, addA.stderr);
    const addB = await bench.cnitool("add", netB, podB);
    assert.equal(addB.code, 0, addB.stderr);
    const idA = await cnitoolContainerId(podA.path);
    const idB = await cnitoolContainerId(podB.path);
    const ipsB = resultIps(JSON.parse(addB.stdout));
    assert.equal(ipsB.length, 2);
    assert.deepEqual(await bench.attachments(), [`${idA}/eth0`, `${idB}/eth0`].sort());

    // GC as the runtime sends it for network A: only A's attachments are listed, none here.
    const gcA = await node.cni("GC", {
      ifname: "",
      stdin: await node.netconf({
        name: netA,
        cniVersion: "1.1.0",
        "cni.dev/valid-attachments": [],
      }),
    });
    assert.equal(gcA.code, 0, gcA.stdout);
    assert.deepEqual(await bench.attachments(), [`${idB}/eth0`], "A's pod released, B's kept");
    for (const ip of ipsB) assert.ok(await ping(node.ns, ip), `B's pod answers on ${ip}`);

    // `cnitool gc` of network A (libcni DELs its cache, then GC without a list): B unharmed.
    const gcAll = await bench.cnitool("gc", netA, podA);
    assert.equal(gcAll.code, 0, gcAll.stderr);
    assert.deepEqual(await bench.attachments(), [`${idB}/eth0`]);
    for (const ip of ipsB) assert.ok(await ping(node.ns, ip), `B's pod still answers on ${ip}`);
    const checkB = await bench.cnitool("check", netB, podB);
    assert.equal(checkB.code, 0, checkB.stderr);

    // A GC of network B that lists its pod keeps it; one that does not releases it.
    const keepB = [{ containerID: idB, ifname: "eth0" }];
    const gcB = await node.cni("GC", {
      ifname: "",
      stdin: await node.netconf({ name: netB, "cni.dev/valid-attachments": keepB }),
    });
    assert.equal(gcB.code, 0, gcB.stdout);
    assert.deepEqual(await bench.attachments(), [`${idB}/eth0`]);
    const gcBAll = await bench.cnitool("gc", netB, podB);
    assert.equal(gcBAll.code, 0, gcBAll.stderr);
    assert.deepEqual(await bench.attachments(), []);
    assert.deepEqual(await node.flockLinks(), []);
    assert.deepEqual(await cniCacheEntries(netB), []);
  },
});

Deno.test({
  name: "two flock networks: ADD, CHECK and DEL naming network B never touch network A's pod",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:4f::/64", cidr4: "10.79.0.0/24" },
      nodeOptions: UPLINK,
    });
    await using pod = await TestNamespace.create("flk-nwx");
    const call = (network: string, ifname = "eth0", extra: Record<string, unknown> = {}) => ({
      containerId: "shared",
      netns: pod.path,
      ifname,
      extraConfig: { name: network, ...extra },
    });
    const add = await node.cni("ADD", call("net-a"));
    assert.equal(add.code, 0, add.stdout);
    const ips = resultIps(add.json);
    const links = await node.flockLinks();
    const reachable = async (why: string) => {
      assert.deepEqual(await node.flockLinks(), links, `A's veth stays (${why})`);
      for (const ip of ips) assert.ok(await ping(node.ns, ip), `A's pod answers ${ip} (${why})`);
    };

    // Same container and ifname on another network: not a retry of A's ADD.
    const sameIf = await node.cni("ADD", call("net-b"));
    assertCniError(sameIf, 7, /already has a flock interface \(eth0\) on network "net-a"/);
    // Another ifname on another network: still one flock interface per container.
    const otherIf = await node.cni("ADD", call("net-b", "net1"));
    assertCniError(otherIf, 7, /already has a flock interface \(eth0\) on network "net-a"/);
    // CHECK of B: flock holds nothing for B.
    const check = await node.cni("CHECK", call("net-b", "eth0", { prevResult: add.json }));
    assertCniError(check, 3, /no flock attachment.*network "net-b"/);
    // libcni DELs a failed ADD: both DELs succeed and leave A's pod alone.
    for (const ifname of ["eth0", "net1"]) {
      const del = await node.cni("DEL", call("net-b", ifname));
      assert.equal(del.code, 0, del.stdout);
    }
    await reachable("after B's ADD, CHECK and DEL");
    assert.deepEqual(storeRecords(node).map((a) => [a.containerId, a.ifname, a.network]), [
      ["shared", "eth0", "net-a"],
    ]);

    // A's own verbs still work: CHECK, an ADD retry, DEL.
    const checkA = await node.cni("CHECK", call("net-a", "eth0", { prevResult: add.json }));
    assert.equal(checkA.code, 0, checkA.stdout);
    const retry = await node.cni("ADD", call("net-a"));
    assert.equal(retry.code, 0, retry.stdout);
    assert.deepEqual(resultIps(retry.json), ips);
    await reachable("after A's retry");
    const delA = await node.cni("DEL", call("net-a"));
    assert.equal(delA.code, 0, delA.stdout);
    await node.settled();
    assert.deepEqual(storeRecords(node), []);
    assert.deepEqual(await node.flockLinks(), []);
  },
});

Deno.test({
  name: "chained after loopback (cnitool): the result has lo's entries then flock's; CHECK passes",
  ...ROOT_ONLY,
  async fn() {
    await using bench = new NetworksBench(
      await FlockNode.start({
        config: { cidr6: "fd00:50::/64", cidr4: "10.80.0.0/24" },
        nodeOptions: UPLINK,
      }),
    );
    const { node } = bench;
    const network = await bench.network("chain", [{ type: "loopback" }]);
    await using pod = await TestNamespace.create("flk-nwc");
    // A prevResult flock could not print again is refused before anything is allocated.
    const bad = await node.cni("ADD", {
      containerId: "bad-chain",
      netns: pod.path,
      extraConfig: { prevResult: { interfaces: [{ name: "lo" }], ips: [{ address: "x" }] } },
    });
    assertCniError(bad, 7, /prevResult is malformed: ips\[0\]\.address "x"/);
    assert.deepEqual(await bench.attachments(), []);
    assert.deepEqual(await node.flockLinks(), []);
    const add = await bench.cnitool("add", network, pod);
    assert.equal(add.code, 0, add.stderr);
    const result = JSON.parse(add.stdout) as {
      interfaces: { name: string; sandbox?: string }[];
      ips: { address: string; interface?: number }[];
    };
    const names = result.interfaces.map((i) => i.name);
    assert.equal(names[0], "lo", "loopback's interface first");
    assert.equal(names[2], "eth0", "then flock's host veth and pod interface");
    assert.equal(names.length, 3);
    const byInterface = result.ips.map((ip) => [ip.address, names[ip.interface!]]);
    assert.ok(byInterface.some(([a, n]) => a === "127.0.0.1/8" && n === "lo"), add.stdout);
    const own = byInterface.filter(([, n]) => n === "eth0").map(([a]) => a!.split("/")[0]);
    assert.equal(own.length, 2, add.stdout);
    for (const ip of own) assert.ok(await ping(node.ns, ip!), `pod answers on ${ip}`);
    // libcni hands the cached final result (lo's and flock's) to both plugins' CHECK.
    const check = await bench.cnitool("check", network, pod);
    assert.equal(check.code, 0, check.stderr);
    const del = await bench.cnitool("del", network, pod);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(await bench.attachments(), []);
  },
});

Deno.test({
  name: "records from before networks were kept: GC releases them only when their pod is gone",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:51::/64", cidr4: "10.81.0.0/24" },
      nodeOptions: UPLINK,
    });
    await using live = await TestNamespace.create("flk-nwl");
    await using listed = await TestNamespace.create("flk-nwk");
    const dead = await TestNamespace.create("flk-nwd");
    const pods = [["old-live", live], ["old-listed", listed], ["old-dead", dead]] as const;
    const ips: Record<string, string[]> = {};
    try {
      for (const [id, ns] of pods) {
        const add = await node.cni("ADD", { containerId: id, netns: ns.path });
        assert.equal(add.code, 0, add.stdout);
        ips[id] = resultIps(add.json);
      }
    } finally {
      await dead.remove();
    }
    // What an upgraded node holds: records an older flock wrote, naming no network.
    await node.kill();
    editStore(node, "UPDATE attachment SET network = NULL");
    await node.restartAgent();
    const gc = async (network: string, valid: string[]) => {
      const r = await node.cni("GC", {
        ifname: "",
        stdin: await node.netconf({
          name: network,
          "cni.dev/valid-attachments": valid.map((id) => ({ containerID: id, ifname: "eth0" })),
        }),
      });
      assert.equal(r.code, 0, r.stdout);
      await node.settled();
      return storeRecords(node).map((a) => `${a.containerId}@${a.network ?? "?"}`).sort();
    };

    // Another network's GC cannot know them: only the pod whose netns is gone goes.
    assert.deepEqual(await gc("net-b", []), ["old-listed@?", "old-live@?"]);
    for (const ip of ips["old-live"]) assert.ok(await ping(node.ns, ip), `old-live on ${ip}`);
    // The network that lists one claims it; the unlisted live one stays unclaimed.
    assert.deepEqual(await gc("net-a", ["old-listed"]), ["old-listed@net-a", "old-live@?"]);
    // Claimed, it is released by its network's GC like any other record.
    assert.deepEqual(await gc("net-a", []), ["old-live@?"]);
    for (const ip of ips["old-live"]) assert.ok(await ping(node.ns, ip), `old-live on ${ip}`);
    // Its DEL, whichever network names it, releases it.
    const del = await node.cni("DEL", {
      containerId: "old-live",
      netns: live.path,
      extraConfig: { name: "net-b" },
    });
    assert.equal(del.code, 0, del.stdout);
    await node.settled();
    assert.deepEqual(storeRecords(node), []);
    assert.deepEqual(await node.flockLinks(), []);
  },
});
