/**
 * End to end with cnitool v1.3.0 (libcni 1.3, spec 1.1.0, with its result cache): add, check,
 * del, gc and status against a flock node whose agent runs in a node namespace. cnitool prints
 * only an error's message, so the codes the plugin answered come from the plugin's own log file
 * (`logFile` in the network config), and from running the installed plugin directly.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ROOT_ONLY, run } from "../helpers/exec.ts";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import {
  cniCacheEntries,
  cnitool,
  type CnitoolCommand,
  cnitoolContainerId,
  removeCniCache,
  writeConflist,
} from "../helpers/cnitool.ts";
import { hostIfaceName } from "../../agent/datapath.ts";
import { DB_FILE } from "../../agent/store.ts";
import type { NodeConfigSpec } from "../../agent/config.ts";

interface IpLink {
  ifname: string;
  mtu: number;
  addr_info: { local: string; prefixlen: number; scope: string }[];
}

/** A flock node plus cnitool networks over it, named after the node's own unique network. */
class CnitoolBench implements AsyncDisposable {
  readonly networks: string[] = [];
  readonly netconfPath: string;
  readonly cniLog: string;

  constructor(readonly node: FlockNode) {
    this.netconfPath = join(node.dir, "cnitool-net.d");
    this.cniLog = join(node.dir, "cni.log");
  }

  static async start(config: NodeConfigSpec, startAgent = true): Promise<CnitoolBench> {
    return new CnitoolBench(await FlockNode.start({ config, startAgent }));
  }

  /** Writes flock's installed conflist under a new name; `header` overrides its top-level keys. */
  async network(suffix: string, header: Record<string, unknown> = {}): Promise<string> {
    const name = `${this.node.networkName}-${suffix}`;
    const conflist = { ...await this.node.conflist(), ...header, name } as Record<string, unknown>;
    for (const [k, v] of Object.entries(header)) if (v === undefined) delete conflist[k];
    const plugins = conflist.plugins as Record<string, unknown>[];
    conflist.plugins = plugins.map((p) => ({ ...p, logFile: this.cniLog }));
    await writeConflist(this.netconfPath, conflist);
    this.networks.push(name);
    return name;
  }

  /** `cnitool COMMAND NETWORK POD` in the node namespace, plugins from the node's bin dir. */
  cnitool(command: CnitoolCommand, network: string, pod: TestNamespace | string) {
    return cnitool(command, network, pod, {
      hostNetns: this.node.ns,
      netconfPath: this.netconfPath,
      cniPath: [this.node.binDir],
    });
  }

  /** The plugin's log lines for `command`, newest last. */
  async pluginLog(command: string): Promise<{ code?: number; msg: string }[]> {
    const text = await Deno.readTextFile(this.cniLog).catch(() => "");
    return text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
      .filter((l) => l.command === command);
  }

  /** The CNI code of the plugin's last failed `command`. */
  async lastErrorCode(command: string): Promise<number | undefined> {
    return (await this.pluginLog(command)).at(-1)?.code;
  }

  /**
   * Attachments in the agent's store, read from its database file read-only once pending DELs
   * have settled (a DEL answers before its veth, and so its record, is gone).
   */
  async attachments(): Promise<string[]> {
    await this.node.settled();
    const db = new DatabaseSync(join(this.node.stateDir, DB_FILE), { readOnly: true });
    try {
      const rows = db.prepare("SELECT container_id, ifname FROM attachment ORDER BY 1").all();
      return rows.map((r) => `${r.container_id}/${r.ifname}`);
    } finally {
      db.close();
    }
  }

  /** flock's routes apart from the node-wide 169.254.1.1 gateway address. */
  async podRoutes(): Promise<{ dst: string; dev?: string }[]> {
    return (await this.node.flockRoutes()).filter((r) => !r.dst.startsWith("169.254.1.1"));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.node.remove();
    for (const network of this.networks) await removeCniCache(network);
  }
}

/** Global addresses and MTU of the pod's eth0; undefined when it has no eth0. */
async function podEth0(pod: TestNamespace): Promise<{ mtu: number; addrs: string[] } | undefined> {
  const r = await pod.exec(["ip", "-j", "addr", "show", "dev", "eth0"]);
  if (!r.success) return undefined;
  const [link] = JSON.parse(r.stdout) as IpLink[];
  const addrs = link.addr_info.filter((a) => a.scope === "global")
    .map((a) => `${a.local}/${a.prefixlen}`).sort();
  return { mtu: link.mtu, addrs };
}

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

Deno.test({
  name: "cnitool: ADD answers in the version asked for (1.1.0, 1.0.0, 0.4.0), CHECK, DEL twice",
  ...ROOT_ONLY,
  async fn() {
    await using bench = await CnitoolBench.start({
      cidr6: "fd00:3c::/64",
      cidr4: "10.60.0.0/24",
      mtu: 1400,
    });
    const { node } = bench;
    // flock's own conflist says cniVersion 1.0.0 + cniVersions [1.0.0, 1.1.0]: libcni 1.3 picks
    // 1.1.0. A conflist without cniVersions is what libcni < 1.2 (podman 4, containerd 1.7) uses;
    // flock also advertises 0.4.0, whose result type still carries `ips[].version`.
    const cases = [
      { version: "1.1.0", network: await bench.network("v11") },
      { version: "1.0.0", network: await bench.network("v10", { cniVersions: undefined }) },
      {
        version: "0.4.0",
        network: await bench.network("v04", { cniVersion: "0.4.0", cniVersions: undefined }),
      },
    ];
    for (const { version, network } of cases) {
      await using pod = await TestNamespace.create("flk-ctp");
      const containerId = await cnitoolContainerId(pod.path);
      const hostIface = hostIfaceName(containerId);

      const add = await bench.cnitool("add", network, pod);
      assert.equal(add.code, 0, `${version} add: ${add.stderr}\n${await node.agentLog()}`);
      const result = JSON.parse(add.stdout);
      assert.equal(result.cniVersion, version);
      // interfaces[0] the host veth (no sandbox), interfaces[1] the pod's eth0 in its sandbox;
      // the interface MTU exists only in 1.1.0 results.
      assert.equal(result.interfaces.length, 2);
      assert.equal(result.interfaces[0].name, hostIface);
      assert.match(result.interfaces[0].mac, MAC);
      assert.equal(result.interfaces[0].sandbox, undefined);
      assert.equal(result.interfaces[1].name, "eth0");
      assert.match(result.interfaces[1].mac, MAC);
      assert.equal(result.interfaces[1].sandbox, pod.path);
      assert.equal(result.interfaces[1].mtu, version === "1.1.0" ? 1400 : undefined);
      // One /128 and one /32 on interface 1, each with its link-local gateway; `version` only in
      // the 0.x result types.
      assert.equal(result.ips.length, 2);
      const [ip6, ip4] = result.ips;
      assert.match(ip6.address, /^fd00:3c::[0-9a-f:]+\/128$/);
      assert.deepEqual({ ...ip6, address: undefined }, {
        address: undefined,
        gateway: "fe80::1",
        interface: 1,
        ...(version === "0.4.0" ? { version: "6" } : {}),
      });
      assert.match(ip4.address, /^10\.60\.0\.\d+\/32$/);
      assert.deepEqual({ ...ip4, address: undefined }, {
        address: undefined,
        gateway: "169.254.1.1",
        interface: 1,
        ...(version === "0.4.0" ? { version: "4" } : {}),
      });
      assert.deepEqual(result.routes, [
        { dst: "::/0", gw: "fe80::1" },
        { dst: "0.0.0.0/0", gw: "169.254.1.1" },
      ]);

      // The kernel agrees with the Result: the pod's addresses and MTU, the host routes.
      assert.deepEqual(await podEth0(pod), { mtu: 1400, addrs: [ip4.address, ip6.address] });
      const routes = await bench.podRoutes();
      assert.deepEqual(
        routes.map((r) => `${r.dst} ${r.dev}`).sort(),
        [`${ip4.address.split("/")[0]} ${hostIface}`, `${ip6.address.split("/")[0]} ${hostIface}`],
      );
      assert.deepEqual(await node.flockLinks(), [hostIface]);
      assert.deepEqual(await bench.attachments(), [`${containerId}/eth0`]);

      const check = await bench.cnitool("check", network, pod);
      assert.equal(check.code, 0, `${version} check: ${check.stderr}`);

      // Break the pod: without its IPv6 address CHECK fails and says what is missing.
      const broken = await pod.exec(["ip", "-6", "addr", "del", ip6.address, "dev", "eth0"]);
      assert.equal(broken.code, 0, broken.stderr);
      const failed = await bench.cnitool("check", network, pod);
      assert.equal(failed.code, 1, failed.stdout);
      assert.match(failed.stderr, /lacks IPv6 address fd00:3c::/);

      for (let i = 1; i <= 2; i++) {
        const del = await bench.cnitool("del", network, pod);
        assert.equal(del.code, 0, `${version} del #${i}: ${del.stderr}`);
        assert.equal(await podEth0(pod), undefined);
        assert.deepEqual(await node.flockLinks(), []);
        assert.deepEqual(await bench.podRoutes(), []);
        assert.deepEqual(await bench.attachments(), []);
        assert.deepEqual(await cniCacheEntries(network), []);
      }
    }
  },
});

Deno.test({
  name: "cnitool: DEL succeeds and cleans up when the netns is gone or libcni lost its cache",
  ...ROOT_ONLY,
  async fn() {
    await using bench = await CnitoolBench.start({ cidr6: "fd00:3f::/64", cidr4: "10.63.0.0/24" });
    const { node } = bench;
    const network = await bench.network("del");
    await using gone = await TestNamespace.create("flk-ctn");
    await using uncached = await TestNamespace.create("flk-ctu");
    for (const pod of [gone, uncached]) {
      const add = await bench.cnitool("add", network, pod);
      assert.equal(add.code, 0, add.stderr);
    }
    assert.equal((await bench.podRoutes()).length, 4);

    // The sandbox's netns vanished (its eth0 and so the host veth with it): DEL gets a dangling
    // CNI_NETNS and must still release the record, the addresses and the host routes.
    const gonePath = gone.path;
    await gone.remove();
    const delGone = await bench.cnitool("del", network, gonePath);
    assert.equal(delGone.code, 0, delGone.stderr);
    const uncachedId = await cnitoolContainerId(uncached.path);
    assert.deepEqual(await bench.attachments(), [`${uncachedId}/eth0`]);
    assert.deepEqual(await node.flockLinks(), [hostIfaceName(uncachedId)]);
    assert.equal((await bench.podRoutes()).length, 2);

    // libcni's result cache lost (a reboot, a crash mid-write): DEL comes without prevResult.
    assert.equal((await removeCniCache(network)).length, 1);
    const delUncached = await bench.cnitool("del", network, uncached);
    assert.equal(delUncached.code, 0, delUncached.stderr);
    assert.deepEqual(await bench.attachments(), []);
    assert.deepEqual(await node.flockLinks(), []);
    assert.deepEqual(await bench.podRoutes(), []);
    assert.equal(await podEth0(uncached), undefined);
  },
});

Deno.test({
  name: "cnitool: GC releases every attachment not in cni.dev/valid-attachments",
  ...ROOT_ONLY,
  async fn() {
    await using bench = await CnitoolBench.start({ cidr6: "fd00:3d::/64", cidr4: "10.61.0.0/24" });
    const { node } = bench;
    const network = await bench.network("gc");
    await using kept = await TestNamespace.create("flk-ctk");
    await using cached = await TestNamespace.create("flk-ctc");
    await using leakedKept = await TestNamespace.create("flk-ctl");
    await using leakedGone = await TestNamespace.create("flk-ctg");
    // Two attachments through cnitool (in libcni's cache), two made behind its back (leaked).
    for (const pod of [kept, cached]) {
      const add = await bench.cnitool("add", network, pod);
      assert.equal(add.code, 0, add.stderr);
    }
    for (const [id, pod] of [["leak-kept", leakedKept], ["leak-gone", leakedGone]] as const) {
      // On the same network: GC releases only the attachments of the network it names.
      const add = await node.cni("ADD", {
        containerId: id,
        netns: pod.path,
        extraConfig: { name: network },
      });
      assert.equal(add.code, 0, add.stdout);
    }
    const keptId = await cnitoolContainerId(kept.path);
    const cachedId = await cnitoolContainerId(cached.path);
    assert.equal((await node.flockLinks()).length, 4);

    // GC exactly as libcni ≥ 1.2.3 sends it (both key spellings), through the installed plugin.
    const valid = [
      { containerID: keptId, ifname: "eth0" },
      { containerID: cachedId, ifname: "eth0" },
      { containerID: "leak-kept", ifname: "eth0" },
    ];
    const gc = await node.cni("GC", {
      ifname: "",
      stdin: await node.netconf({
        name: network,
        cniVersion: "1.1.0",
        "cni.dev/valid-attachments": valid,
        "cni.dev/attachments": valid,
      }),
    });
    assert.equal(gc.code, 0, gc.stdout);
    assert.equal(gc.stdout, "");
    assert.deepEqual(
      await bench.attachments(),
      [cachedId, keptId, "leak-kept"].sort().map((id) => `${id}/eth0`),
    );
    assert.equal(await podEth0(leakedGone), undefined);
    assert.ok(!(await node.flockLinks()).includes(hostIfaceName("leak-gone")));
    assert.equal((await bench.podRoutes()).length, 6);
    for (const pod of [kept, cached, leakedKept]) assert.ok(await podEth0(pod));

    // `cnitool gc` names no valid attachment: libcni DELs what it cached, then the plugin's GC
    // releases the rest (the leaked one it never knew about).
    const gcAll = await bench.cnitool("gc", network, kept);
    assert.equal(gcAll.code, 0, gcAll.stderr);
    assert.deepEqual(await bench.attachments(), []);
    assert.deepEqual(await node.flockLinks(), []);
    assert.deepEqual(await bench.podRoutes(), []);
    for (const pod of [kept, cached, leakedKept]) assert.equal(await podEth0(pod), undefined);
    assert.deepEqual(await cniCacheEntries(network), []);
  },
});

Deno.test({
  name: "cnitool: STATUS fails with 50 until the agent is ready and after it stops; ADD gets 11",
  ...ROOT_ONLY,
  async fn() {
    const config: NodeConfigSpec = { cidr6: "fd00:3e::/64", cidr4: "10.62.0.0/24" };
    await using bench = await CnitoolBench.start(config, false);
    const { node } = bench;
    const network = await bench.network("status");
    await using pod = await TestNamespace.create("flk-cts");

    // The agent listens at once but waits for its NodeConfig (a FIFO nobody has written yet).
    await Deno.remove(node.configPath);
    const fifo = await run(["mkfifo", "-m", "0600", node.configPath]);
    assert.equal(fifo.code, 0, fifo.stderr);
    await node.startAgent({ waitReady: false });
    const deadline = Date.now() + 15_000;
    let waiting;
    do {
      waiting = await node.cni("STATUS");
      if (/not ready/.test(waiting.json?.msg ?? "")) break;
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() < deadline);
    assert.equal(waiting.code, 1, waiting.stdout);
    assert.equal(waiting.json.code, 50, waiting.stdout);

    const notReady = await bench.cnitool("status", network, pod);
    assert.equal(notReady.code, 1, notReady.stdout);
    assert.match(notReady.stderr, /flock agent is not ready: waiting for the node configuration/);
    assert.equal(await bench.lastErrorCode("STATUS"), 50);
    const earlyAdd = await bench.cnitool("add", network, pod);
    assert.equal(earlyAdd.code, 1, earlyAdd.stdout);
    assert.match(earlyAdd.stderr, /not ready/);
    assert.equal(await bench.lastErrorCode("ADD"), 11);
    assert.equal(await podEth0(pod), undefined);

    // The NodeConfig arrives: STATUS succeeds, and so does ADD.
    const writer = await Deno.open(node.configPath, { write: true });
    await writer.write(new TextEncoder().encode(JSON.stringify({
      apiVersion: "flock.fritzlab.net/v1alpha1",
      kind: "NodeConfig",
      metadata: { name: node.name },
      spec: config,
    })));
    writer.close();
    await node.waitReady();
    const ready = await bench.cnitool("status", network, pod);
    assert.equal(ready.code, 0, ready.stderr);
    assert.equal(ready.stdout, "");
    const add = await bench.cnitool("add", network, pod);
    assert.equal(add.code, 0, add.stderr);

    // The agent stops: STATUS is 50 again, ADD of another pod 11, and the running pod keeps
    // its addresses (the datapath lives in the kernel).
    await node.kill("SIGTERM");
    const stopped = await bench.cnitool("status", network, pod);
    assert.equal(stopped.code, 1, stopped.stdout);
    assert.match(stopped.stderr, /flock agent is not running/);
    assert.equal(await bench.lastErrorCode("STATUS"), 50);
    const direct = await node.cni("STATUS");
    assert.equal(direct.json?.code, 50, direct.stdout);
    await using other = await TestNamespace.create("flk-cto");
    const addDown = await node.cni("ADD", { containerId: "while-down", netns: other.path });
    assert.equal(addDown.code, 1);
    assert.equal(addDown.json?.code, 11, addDown.stdout);
    assert.match(addDown.json?.msg, /flock agent is not running/);
    const cnitoolAddDown = await bench.cnitool("add", network, other);
    assert.equal(cnitoolAddDown.code, 1, cnitoolAddDown.stdout);
    assert.equal(await bench.lastErrorCode("ADD"), 11);
    assert.equal((await podEth0(pod))?.addrs.length, 2);

    // Back up on the same state (the config now a plain file): DEL finds the pod and cleans up.
    await Deno.remove(node.configPath);
    await node.writeConfig(config);
    await node.startAgent();
    const del = await bench.cnitool("del", network, pod);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(await bench.attachments(), []);
    assert.deepEqual(await node.flockLinks(), []);
  },
});
