import assert from "node:assert/strict";
import { cniCacheEntries, referencePtpConflist, removeCniCache, writeConflist } from "./cnitool.ts";
import { ROOT_ONLY } from "./exec.ts";
import { TestNamespace } from "./netns.ts";
import {
  containersConf,
  podman,
  podmanContainers,
  podmanRemove,
  podmanRun,
  uniqueContainerName,
} from "./podman.ts";
import type { IpLink } from "./iproute.ts";

Deno.test("containersConf puts the caller's plugin dirs first, without duplicates", () => {
  const conf = containersConf(["/tmp/flock-bin", "/usr/lib/cni"]);
  assert.match(conf, /^default_ulimits = \[\]$/m);
  assert.match(conf, /^runtime = "runc"$/m);
  assert.match(conf, /^network_backend = "cni"$/m);
  assert.match(
    conf,
    /^cni_plugin_dirs = \["\/tmp\/flock-bin","\/usr\/lib\/cni","\/opt\/cni\/bin"\]$/m,
  );
});

Deno.test({
  name: "podman honours our containers.conf: CNI backend, runc",
  ...ROOT_ONLY,
  async fn() {
    const info = await podman([
      "info",
      "--format",
      "{{.Host.NetworkBackend}} {{.Host.OCIRuntime.Name}}",
    ]);
    assert.equal(info.code, 0, info.stderr);
    assert.equal(info.stdout.trim(), "cni runc");
  },
});

Deno.test({
  name: "podman runs a container on a ptp network inside a node namespace, then removes it",
  ...ROOT_ONLY,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "flk-podman-" });
    const network = `flk-ref-${Deno.pid}-pod`;
    const name = uniqueContainerName("flk-hlp");
    const node = await TestNamespace.create("flk-pnode");
    const netDir = `${tmp}/net.d`;
    try {
      const dataDir = `${tmp}/ipam`;
      await writeConflist(
        netDir,
        referencePtpConflist({ name: network, dataDir, subnet4: "10.97.0.0/24" }),
      );
      const ls = await podman(["network", "ls", "--format", "{{.Name}}"], {
        networkConfigDir: netDir,
      });
      assert.equal(ls.code, 0, ls.stderr);
      assert.ok(ls.stdout.split("\n").includes(network), ls.stdout);

      const result = await podmanRun({
        name,
        network,
        netns: node,
        networkConfigDir: netDir,
        cmd: ["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
      });
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /inet 10\.97\.0\.\d+\/24/);

      // --rm ran CNI DEL: no container, no host-side veth in the node, no lease, no cache.
      assert.deepEqual(await podmanContainers(name), []);
      const links = await node.ipJson<IpLink[]>(["link", "show"]);
      assert.deepEqual(links.map((l) => l.ifname), ["lo"]);
      const leases = [...Deno.readDirSync(`${dataDir}/${network}`)].map((e) => e.name)
        .filter((n) => n !== "lock" && !n.startsWith("last_reserved_ip"));
      assert.deepEqual(leases, []);
      assert.deepEqual(await cniCacheEntries(network), []);

      // A detached container: its host-side veth lives in the node namespace until removal.
      const detached = await podmanRun({
        name,
        network,
        netns: node,
        networkConfigDir: netDir,
        runArgs: ["--detach"],
        cmd: ["sleep", "60"],
      });
      assert.equal(detached.code, 0, detached.stderr);
      assert.deepEqual(await podmanContainers(name), [name]);
      const during = await node.ipJson<IpLink[]>(["link", "show"]);
      assert.equal(during.length, 2, JSON.stringify(during));
      await podmanRemove(name, { netns: node, networkConfigDir: netDir });
      assert.deepEqual(await podmanContainers(name), []);
      assert.deepEqual((await node.ipJson<IpLink[]>(["link", "show"])).map((l) => l.ifname), [
        "lo",
      ]);
      assert.deepEqual(await cniCacheEntries(network), []);
    } finally {
      await podmanRemove(name, { netns: node, networkConfigDir: netDir });
      await node.remove();
      await removeCniCache(network);
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
