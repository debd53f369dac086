/**
 * Bad input through the real plugin exec path (issue 3): every malformed invocation gets the CNI
 * spec's error JSON on stdout with the right code and a message naming what is wrong, a non-zero
 * exit, and leaves nothing behind — no record, no link, no route, no pod interface, and the next
 * good ADD gets the lowest address.
 */

import assert from "node:assert/strict";
import { type CniCall, FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import {
  addLivePod,
  assertNodeHolds,
  type LivePod,
  podAddresses,
  resultIps,
} from "../helpers/node_state.ts";
import { assertCniError } from "../helpers/cni_output.ts";

const A = "flock.fritzlab.net/";

/** runtimeConfig carrying pod annotations, as containerd and CRI-O pass them. */
function annotated(annotations: Record<string, string>): CniCall["extraConfig"] {
  return { runtimeConfig: { "io.kubernetes.cri.pod-annotations": annotations } };
}

Deno.test({
  name: "bad input: each malformed invocation is a spec error and leaves nothing allocated",
  ...ROOT_ONLY,
  async fn(t) {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:ba::/64", cidr4: "10.186.0.0/24" },
    });
    await using podNs = await TestNamespace.create("flk-bad");
    await using probeNs = await TestNamespace.create("flk-bad");
    const validStdin = await node.netconf();
    const pod = { containerId: "bad-pod", netns: podNs.path };
    /** Pods that are meant to exist while a case runs. */
    let keep: LivePod[] = [];
    /** The addresses the next good `lowest` ADD must get. */
    let lowest = ["10.186.0.1", "fd00:ba::1"];

    /** Runs one rejected invocation and proves nothing was made or taken. */
    const rejected = (
      name: string,
      code: number,
      msg: RegExp,
      call: CniCall,
      command = "ADD",
    ) =>
      t.step(name, async () => {
        const r = await node.cni(command, { ...pod, ...call });
        assertCniError(r, code, msg);
        await assertNodeHolds(node, keep, name);
        assert.deepEqual(await podAddresses(podNs), [], "no interface in the pod");
        const probe = await node.cni("ADD", {
          containerId: "probe",
          netns: probeNs.path,
          extraConfig: annotated({ [A + "ip-algo"]: "lowest" }),
        });
        assert.equal(probe.code, 0, probe.stdout);
        assert.deepEqual(resultIps(probe.json).sort(), lowest, "the lowest addresses are free");
        assert.equal((await node.cni("DEL", { containerId: "probe" })).code, 0);
        await assertNodeHolds(node, keep, `${name}, after the probe`);
      });

    // stdin
    await rejected("malformed stdin", 6, /network configuration on stdin/, {
      stdin: "{cniVersion: 1.0.0, name=flock",
    });
    await rejected("truncated stdin", 6, /network configuration on stdin/, {
      stdin: validStdin.slice(0, Math.floor(validStdin.length / 2)),
    });
    await rejected("empty stdin", 6, /stdin is empty/, { stdin: "" });
    await rejected("stdin is JSON but not an object", 6, /expected a JSON object/, {
      stdin: "[1, 2]",
    });

    // environment
    await rejected("unknown CNI_COMMAND", 4, /CNI_COMMAND/, {}, "FROB");
    await rejected("missing CNI_CONTAINERID", 4, /CNI_CONTAINERID/, {
      env: { CNI_CONTAINERID: undefined },
    });
    await rejected("empty CNI_CONTAINERID", 4, /CNI_CONTAINERID/, { containerId: "" });
    await rejected("invalid CNI_CONTAINERID", 4, /CNI_CONTAINERID/, { containerId: "../etc" });
    await rejected("missing CNI_NETNS on ADD", 4, /CNI_NETNS/, { env: { CNI_NETNS: undefined } });
    // A hand-run plugin resolves a relative path against its working directory.
    await rejected("relative CNI_NETNS that does not exist", 8, /flk-bad-rel.*does not exist/, {
      netns: "flk-bad-rel/x",
    });
    await rejected("CNI_NETNS that does not exist", 8, /flk-bad-missing/, {
      netns: "/run/netns/flk-bad-missing",
    });
    await rejected("missing CNI_IFNAME", 4, /CNI_IFNAME/, { env: { CNI_IFNAME: undefined } });
    await rejected("CNI_IFNAME longer than IFNAMSIZ", 4, /CNI_IFNAME/, {
      ifname: "eth0123456789abc",
    });
    await rejected("missing CNI_NETNS on CHECK", 4, /CNI_NETNS/, {
      env: { CNI_NETNS: undefined },
    }, "CHECK");

    // network configuration
    await rejected(
      "unknown cniVersion",
      1,
      /incompatible CNI versions: the config's cniVersion is "9\.9\.9"/,
      {
        stdin: JSON.stringify({ ...JSON.parse(validStdin), cniVersion: "9.9.9" }),
      },
    );
    await rejected("missing cniVersion", 1, /cniVersion/, {
      stdin: JSON.stringify({ ...JSON.parse(validStdin), cniVersion: undefined }),
    });
    await rejected("missing name", 7, /name/, {
      stdin: JSON.stringify({ ...JSON.parse(validStdin), name: undefined }),
    });
    await rejected("pod annotations that are not an object", 7, /pod-annotations/, {
      extraConfig: { runtimeConfig: { "io.kubernetes.cri.pod-annotations": "ipv6=auto" } },
    });

    // annotations
    const badAnnotations: [string, Record<string, string>, RegExp][] = [
      ["ipv6: not an address", { [A + "ipv6"]: "fd00:ba::zz" }, /flock\.fritzlab\.net\/ipv6/],
      ["ipv4: not an address", { [A + "ipv4"]: "10.186.0.300" }, /flock\.fritzlab\.net\/ipv4/],
      ["ipv6: wrong family", { [A + "ipv6"]: "10.186.0.9" }, /flock\.fritzlab\.net\/ipv6/],
      [
        "ipv6: outside the node CIDR",
        { [A + "ipv6"]: "fd00:bb::9" },
        /flock\.fritzlab\.net\/ipv6.*outside/,
      ],
      [
        "ipv4: outside the node CIDR",
        { [A + "ipv4"]: "10.9.0.9" },
        /flock\.fritzlab\.net\/ipv4.*outside/,
      ],
      [
        "ipv4: the network address",
        { [A + "ipv4"]: "10.186.0.0" },
        /flock\.fritzlab\.net\/ipv4.*network address/,
      ],
      [
        "cidr6: sub-CIDR outside the node CIDR",
        { [A + "cidr6"]: "fd00:bb::/120" },
        /flock\.fritzlab\.net\/cidr6.*not inside/,
      ],
      [
        "cidr4: sub-CIDR outside the node CIDR",
        { [A + "cidr4"]: "10.9.0.0/28" },
        /flock\.fritzlab\.net\/cidr4.*not inside/,
      ],
      ["cidr4: not a prefix", { [A + "cidr4"]: "10.186.0.0/33" }, /flock\.fritzlab\.net\/cidr4/],
      [
        "ipv4 pinned outside its cidr4",
        { [A + "cidr4"]: "10.186.0.16/28", [A + "ipv4"]: "10.186.0.5" },
        /flock\.fritzlab\.net\/ipv4.*cidr4/,
      ],
      [
        "ip-algo: unknown algorithm",
        { [A + "ip-algo"]: "fastest" },
        /flock\.fritzlab\.net\/ip-algo.*fastest/,
      ],
      ["unknown flock annotation", { [A + "ipv7"]: "auto" }, /flock\.fritzlab\.net\/ipv7/],
      [
        "both families none",
        { [A + "ipv6"]: "none", [A + "ipv4"]: "none" },
        /neither an IPv6 nor an IPv4/,
      ],
      [
        "anycast: outside the node's anycastCIDRs",
        { [A + "anycast"]: "fd00:aa::1" },
        /flock\.fritzlab\.net\/anycast/,
      ],
    ];
    for (const [name, annotations, msg] of badAnnotations) {
      await rejected(`annotation ${name}`, 7, msg, { extraConfig: annotated(annotations) });
    }

    // Static addresses from the runtime (the `ips` capability, podman's CNI_ARGS IP).
    await rejected(
      "runtimeConfig.ips: outside the node CIDR",
      7,
      /^runtimeConfig\.ips: 10\.9\.0\.7 is outside the node's IPv4 CIDR 10\.186\.0\.0\/24/,
      { extraConfig: { runtimeConfig: { ips: ["fd00:ba::7", "10.9.0.7"] } } },
    );
    await rejected(
      "runtimeConfig.ips: two addresses of a family",
      7,
      /^runtimeConfig\.ips: two IPv6 addresses/,
      { extraConfig: { runtimeConfig: { ips: ["fd00:ba::7", "fd00:ba::8"] } } },
    );
    await rejected(
      "CNI_ARGS IP: outside the node CIDR",
      7,
      /^CNI_ARGS IP: fd00:bb::7 is outside the node's IPv6 CIDR fd00:ba::\/64/,
      { args: "IgnoreUnknown=1;IP=fd00:bb::7" },
    );

    // A pinned address another pod holds: nothing of the failed pod may stay taken.
    await using holderNs = await TestNamespace.create("flk-bad");
    keep = [await addLivePod(node, "holder", holderNs.path)];
    assert.deepEqual(keep[0].ips.sort(), ["10.186.0.1", "fd00:ba::1"]);
    lowest = ["10.186.0.2", "fd00:ba::2"];
    await rejected(
      "annotation ipv6: pinned address already in use",
      7,
      /flock\.fritzlab\.net\/ipv6.*fd00:ba::1.*in use/,
      { extraConfig: annotated({ [A + "ipv6"]: "fd00:ba::1" }) },
    );
    // IPv6 is allocated before IPv4 fails: the rollback must free it.
    await rejected(
      "annotation ipv4: pinned address already in use",
      7,
      /flock\.fritzlab\.net\/ipv4.*10\.186\.0\.1.*in use/,
      { extraConfig: annotated({ [A + "ipv4"]: "10.186.0.1" }) },
    );
    // The same through the runtime's field: the error names it, the IPv6 taken first is freed.
    await rejected(
      "runtimeConfig.ips: pinned address already in use",
      7,
      /^runtimeConfig\.ips: address 10\.186\.0\.1 is already in use/,
      { extraConfig: { runtimeConfig: { ips: ["fd00:ba::7", "10.186.0.1"] } } },
    );
    assert.equal((await node.cni("DEL", { containerId: "holder" })).code, 0);
    keep = [];
    await assertNodeHolds(node, []);
  },
});

Deno.test({
  name: "bad input: an exhausted pool is a clear error and takes nothing",
  ...ROOT_ONLY,
  async fn() {
    // A /30 has two usable IPv4 addresses; a /126 three IPv6 ones (::0 is the router anycast).
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:bc::/126", cidr4: "10.187.0.0/30" },
    });
    const namespaces = await Promise.all([1, 2, 3].map(() => TestNamespace.create("flk-bx")));
    try {
      const pods: LivePod[] = [];
      for (const [i, ns] of namespaces.slice(0, 2).entries()) {
        const r = await node.cni("ADD", { containerId: `full-${i}`, netns: ns.path });
        assert.equal(r.code, 0, r.stdout);
        pods.push({ containerId: `full-${i}`, ips: resultIps(r.json) });
      }
      const third = { containerId: "full-2", netns: namespaces[2].path };
      const r = await node.cni("ADD", third);
      assertCniError(r, 100, /no free address in the node's IPv4 CIDR 10\.187\.0\.0\/30/);
      await assertNodeHolds(node, pods, "after the exhausted ADD");
      assert.deepEqual(await podAddresses(namespaces[2]), []);
      // The IPv6 address the failed ADD took first was given back: once an IPv4 address is free
      // the pod gets the lowest of both.
      assert.equal((await node.cni("DEL", { containerId: "full-0" })).code, 0);
      const retry = await node.cni("ADD", {
        ...third,
        extraConfig: annotated({ [A + "ip-algo"]: "lowest" }),
      });
      assert.equal(retry.code, 0, retry.stdout);
      assert.deepEqual(resultIps(retry.json).sort(), ["10.187.0.1", "fd00:bc::1"]);
      for (const id of ["full-1", "full-2"]) {
        assert.equal((await node.cni("DEL", { containerId: id })).code, 0);
      }
      await assertNodeHolds(node, []);
    } finally {
      for (const ns of namespaces) await ns.remove().catch(() => {});
    }
  },
});

Deno.test({
  name: "bad input: without CNI_COMMAND the plugin prints its about text and touches nothing",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: { cidr6: "fd00:bd::/64" } });
    await using podNs = await TestNamespace.create("flk-bad");
    // As the reference skel does: the about text on stderr, exit 0, nothing on stdout.
    const r = await node.cni("ADD", {
      containerId: "c1",
      netns: podNs.path,
      env: { CNI_COMMAND: undefined },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /CNI_COMMAND=ADD\|DEL/);
    // Set but empty is the same (skel tests for "").
    const empty = await node.cni("ADD", {
      containerId: "c1",
      netns: podNs.path,
      env: { CNI_COMMAND: "" },
    });
    assert.equal(empty.code, 0, empty.stderr);
    assert.equal(empty.stdout, "");
    assert.match(empty.stderr, /CNI_COMMAND=ADD\|DEL/);
    await assertNodeHolds(node, []);
  },
});

Deno.test({
  name: "bad input: a second interface for the same container is refused; the first keeps working",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: { cidr6: "fd00:be::/64" } });
    await using podNs = await TestNamespace.create("flk-bad");
    const pods: LivePod[] = [await addLivePod(node, "two-if", podNs.path)];
    const second = await node.cni("ADD", {
      containerId: "two-if",
      netns: podNs.path,
      ifname: "eth1",
    });
    assertCniError(
      second,
      7,
      /CNI_IFNAME: container two-if already has a flock interface \(eth0\)/,
    );
    await assertNodeHolds(node, pods, "after the refused second interface");
    // The runtime cleans up the failed ADD with a DEL: it must not touch the first interface.
    const del = await node.cni("DEL", { containerId: "two-if", netns: podNs.path, ifname: "eth1" });
    assert.equal(del.code, 0, del.stdout);
    await assertNodeHolds(node, pods, "after DEL of the refused second interface");
    assert.equal((await node.cni("DEL", { containerId: "two-if", netns: podNs.path })).code, 0);
    await assertNodeHolds(node, []);
  },
});
