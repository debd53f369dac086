import assert from "node:assert/strict";
import {
  cniCacheEntries,
  cnitool,
  cnitoolContainerId,
  cnitoolEnv,
  referencePtpConflist,
  removeCniCache,
  writeConflist,
} from "./cnitool.ts";
import { ROOT_ONLY } from "./exec.ts";
import { leftoverNamespaces, TestNamespace } from "./netns.ts";
import { referencePluginDir } from "./tools.ts";
import type { IpAddr, IpRoute } from "./iproute.ts";

Deno.test("cnitoolEnv renders CNI_ARGS, CAP_ARGS and CNI_PATH", () => {
  const env = cnitoolEnv({
    netconfPath: "/x/net.d",
    cniPath: ["/a", "/b"],
    cniArgs: { IgnoreUnknown: "1", K8S_POD_NAME: "p1" },
    capArgs: { "io.kubernetes.cri.pod-annotations": { k: "v" } },
    ifname: "net1",
  });
  assert.deepEqual(env, {
    NETCONFPATH: "/x/net.d",
    CNI_PATH: "/a:/b",
    CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAME=p1",
    CAP_ARGS: '{"io.kubernetes.cri.pod-annotations":{"k":"v"}}',
    CNI_IFNAME: "net1",
  });
});

Deno.test("cnitoolContainerId matches cnitool's sha512 derivation", async () => {
  // sha512("/var/run/netns/x")[:10], computed independently with sha512sum.
  const id = await cnitoolContainerId("/var/run/netns/x");
  assert.match(id, /^cnitool-[0-9a-f]{20}$/);
  const out = await new Deno.Command("sh", {
    args: ["-c", "printf %s /var/run/netns/x | sha512sum | cut -c1-20"],
  }).output();
  assert.equal(id, `cnitool-${new TextDecoder().decode(out.stdout).trim()}`);
});

Deno.test({
  name: "cnitool add/check/del with ptp + host-local in throwaway namespaces",
  ...ROOT_ONLY,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "flk-cnitool-" });
    const network = `flk-ref-${Deno.pid}-cni`;
    const node = await TestNamespace.create("flk-cnode");
    const pod = await TestNamespace.create("flk-cpod");
    try {
      const dataDir = `${tmp}/ipam`;
      await writeConflist(
        `${tmp}/net.d`,
        referencePtpConflist({
          name: network,
          dataDir,
          subnet4: "10.98.0.0/24",
          subnet6: "fd00:98::/64",
        }),
      );
      const opts = {
        hostNetns: node,
        netconfPath: `${tmp}/net.d`,
        cniPath: [referencePluginDir()],
        cniArgs: { IgnoreUnknown: "1", K8S_POD_NAMESPACE: "default", K8S_POD_NAME: "p1" },
      };

      const add = await cnitool("add", network, pod, opts);
      assert.equal(add.code, 0, add.stderr);
      const result = JSON.parse(add.stdout);
      assert.equal(result.cniVersion, "1.0.0");
      const ips = result.ips.map((ip: { address: string }) => ip.address).sort();
      assert.equal(ips.length, 2);
      assert.match(ips[0], /^10\.98\.0\.\d+\/24$/);
      assert.match(ips[1], /^fd00:98::[0-9a-f]+\/64$/);

      const podAddrs = await pod.ipJson<IpAddr[]>(["addr", "show", "dev", "eth0"]);
      const locals = podAddrs[0].addr_info.map((a) => `${a.local}/${a.prefixlen}`);
      for (const ip of ips) assert.ok(locals.includes(ip), `${ip} not in ${locals}`);
      // The host side landed in the node namespace, with a host route to the pod.
      const podV4 = ips[0].split("/")[0];
      const hostRoutes = await node.ipJson<IpRoute[]>(["-4", "route", "show"]);
      assert.ok(hostRoutes.some((r) => r.dst === podV4), JSON.stringify(hostRoutes));

      const id = await cnitoolContainerId(pod.path);
      assert.deepEqual(await cniCacheEntries(network), [
        `/var/lib/cni/results/${network}-${id}-eth0`,
      ]);

      const check = await cnitool("check", network, pod, opts);
      assert.equal(check.code, 0, check.stderr);

      for (let i = 0; i < 2; i++) {
        const del = await cnitool("del", network, pod, opts);
        assert.equal(del.code, 0, `DEL #${i + 1}: ${del.stderr}`);
      }
      assert.deepEqual(
        await pod.ipJson<IpAddr[]>(["addr", "show", "dev", "lo"]).then((a) => a.length),
        1,
      );
      assert.equal((await pod.exec(["ip", "link", "show", "eth0"])).success, false);
      assert.deepEqual(await cniCacheEntries(network), []);
      const leases = [...Deno.readDirSync(`${dataDir}/${network}`)].map((e) => e.name)
        .filter((n) => n !== "lock" && !n.startsWith("last_reserved_ip"));
      assert.deepEqual(leases, []);
    } finally {
      await pod.remove();
      await node.remove();
      await removeCniCache(network);
      await Deno.remove(tmp, { recursive: true });
    }
    assert.deepEqual(await leftoverNamespaces(`flk-cnode-${Deno.pid}-`), []);
    assert.deepEqual(await leftoverNamespaces(`flk-cpod-${Deno.pid}-`), []);
  },
});
