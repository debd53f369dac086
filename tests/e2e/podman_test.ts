/**
 * End to end with a real container engine: Debian's podman 4.3 (CNI backend, runc) runs busybox
 * containers on a flock network inside a flock node namespace. podman execs the installed flock
 * plugin, which forwards to the node's agent; the tests check what a user of podman would see.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ROOT_ONLY, run } from "../helpers/exec.ts";
import { FlockNode } from "../helpers/flock.ts";
import { removeCniCache } from "../helpers/cnitool.ts";
import {
  podman,
  podmanContainers,
  type PodmanOptions,
  podmanRemove,
  podmanRun,
  uniqueContainerName,
} from "../helpers/podman.ts";
import { DB_FILE } from "../../agent/store.ts";
import type { IpAddr, IpRoute } from "../helpers/iproute.ts";

/** A flock node; podman attaches to its installed conflist (a network name of its own). */
async function podmanOnFlock(
  config: { cidr6?: string; cidr4?: string },
): Promise<{ node: FlockNode; network: string; opts: PodmanOptions }> {
  const node = await FlockNode.start({ config });
  return {
    node,
    network: node.networkName,
    opts: { netns: node.ns, networkConfigDir: node.confDir, pluginDirs: [node.binDir] },
  };
}

/** The path of a running container's network namespace, as podman reports it. */
async function sandboxOf(name: string, opts: PodmanOptions): Promise<string> {
  const r = await podman(["inspect", "--format", "{{.NetworkSettings.SandboxKey}}", name], opts);
  assert.equal(r.code, 0, r.stderr);
  const path = r.stdout.trim();
  assert.ok(path.startsWith("/"), `no sandbox for ${name}: ${r.stdout}`);
  return path;
}

/** `ip -j ARGS` run with the host's iproute2 inside the network namespace at `netnsPath`. */
async function ipJsonIn<T>(netnsPath: string, args: string[]): Promise<T> {
  const r = await run(["nsenter", `--net=${netnsPath}`, "--", "ip", "-j", ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout || "[]") as T;
}

/** Global addresses on the container's eth0, as `addr/prefixlen`. */
async function containerAddresses(netnsPath: string): Promise<string[]> {
  const links = await ipJsonIn<IpAddr[]>(netnsPath, ["addr", "show", "dev", "eth0"]);
  return links.flatMap((l) => l.addr_info)
    .filter((a) => a.scope === "global")
    .map((a) => `${a.local}/${a.prefixlen}`)
    .sort();
}

/** Attachments in the agent's store, read straight from its database file, read-only. */
function storedAttachments(node: FlockNode): { container_id: string; state: string }[] {
  const db = new DatabaseSync(join(node.stateDir, DB_FILE), { readOnly: true });
  try {
    return db.prepare("SELECT container_id, state FROM attachment").all() as {
      container_id: string;
      state: string;
    }[];
  } finally {
    db.close();
  }
}

/** flock's routes on the node apart from the node-wide 169.254.1.1 gateway address. */
async function podRoutes(node: FlockNode): Promise<{ dst: string; dev?: string }[]> {
  return (await node.flockRoutes()).filter((r) => !r.dst.startsWith("169.254.1.1"));
}

Deno.test({
  name: "podman: containers on flock get a /128 and a /32, reach each other, survive stop/start",
  ...ROOT_ONLY,
  async fn() {
    const { node, network, opts } = await podmanOnFlock({
      cidr6: "fd00:3a::/64",
      cidr4: "10.58.0.0/24",
    });
    const names = [uniqueContainerName("flk-e2e-a"), uniqueContainerName("flk-e2e-b")];
    try {
      for (const name of names) {
        const r = await podmanRun({
          ...opts,
          name,
          network,
          keep: true,
          runArgs: ["--detach"],
          cmd: ["sleep", "300"],
        });
        assert.equal(r.code, 0, `podman run ${name}: ${r.stderr}\n${await node.agentLog()}`);
      }
      const addresses: string[][] = [];
      for (const name of names) {
        const sandbox = await sandboxOf(name, opts);
        const addrs = await containerAddresses(sandbox);
        assert.equal(addrs.length, 2, `${name}: ${addrs}`);
        assert.match(addrs[0], /^10\.58\.0\.\d+\/32$/);
        assert.match(addrs[1], /^fd00:3a::[0-9a-f:]+\/128$/);
        // The defaults point at flock's link-local gateways.
        const v6 = await ipJsonIn<IpRoute[]>(sandbox, ["-6", "route", "show", "default"]);
        assert.deepEqual(v6.map((r) => [r.gateway, r.dev]), [["fe80::1", "eth0"]]);
        const v4 = await ipJsonIn<IpRoute[]>(sandbox, ["-4", "route", "show", "default"]);
        assert.deepEqual(v4.map((r) => [r.gateway, r.dev]), [["169.254.1.1", "eth0"]]);
        addresses.push(addrs.map((a) => a.split("/")[0]));
      }
      // podman took flock's Result: it reports the same addresses.
      const inspect = await podman(
        [
          "inspect",
          "--format",
          `{{range .NetworkSettings.Networks}}{{.IPAddress}} ` +
          `{{.GlobalIPv6Address}}{{end}}`,
          names[0],
        ],
        opts,
      );
      assert.equal(inspect.code, 0, inspect.stderr);
      assert.deepEqual(inspect.stdout.trim().split(" ").sort(), addresses[0]);
      assert.equal((await node.flockLinks()).length, 2);
      assert.equal(storedAttachments(node).length, 2);

      // `podman stop` runs CNI DEL and `podman start` a new ADD for the same container ID; an
      // agent killed with SIGKILL and started again keeps every running container's network.
      const stop = await podman(["stop", "--time", "0", names[1]], opts);
      assert.equal(stop.code, 0, stop.stderr);
      // flockLinks first: it waits for the DEL's veth deletion, which ends with the record's.
      assert.equal((await node.flockLinks()).length, 1);
      assert.deepEqual(storedAttachments(node).length, 1);
      const start = await podman(["start", names[1]], opts);
      assert.equal(start.code, 0, `${start.stderr}\n${await node.agentLog()}`);
      addresses[1] = (await containerAddresses(await sandboxOf(names[1], opts)))
        .map((a) => a.split("/")[0]);
      assert.equal(addresses[1].length, 2);
      await node.restartAgent();
      assert.equal((await node.flockLinks()).length, 2);
      assert.equal((await podRoutes(node)).length, 4);

      // Each container pings the other over IPv4 and IPv6, from inside (busybox ping).
      for (const [from, to] of [[0, 1], [1, 0]]) {
        for (const address of addresses[to]) {
          const ping = await podman(
            ["exec", names[from], "ping", "-c", "1", "-W", "2", address],
            { ...opts, timeoutMs: 10_000 },
          );
          assert.equal(ping.code, 0, `${names[from]} → ${address}: ${ping.stdout}${ping.stderr}`);
        }
      }

      // `podman rm -f` runs CNI DEL: nothing of either container is left on the node.
      for (const name of names) await podmanRemove(name, opts);
      assert.deepEqual(await podmanContainers(names[0]), []);
      assert.deepEqual(await node.flockLinks(), []);
      assert.deepEqual(await podRoutes(node), []);
      assert.deepEqual(storedAttachments(node), []);
    } finally {
      for (const name of names) await podmanRemove(name, opts).catch(() => {});
      await node.remove();
      await removeCniCache(network);
    }
  },
});

Deno.test({
  name: "podman run --rm on flock: the command sees its addresses, and the exit releases them",
  ...ROOT_ONLY,
  async fn() {
    const { node, network, opts } = await podmanOnFlock({ cidr6: "fd00:3b::/64" });
    const name = uniqueContainerName("flk-e2e-rm");
    try {
      const r = await podmanRun({
        ...opts,
        name,
        network,
        cmd: ["ip", "-o", "addr", "show", "dev", "eth0"],
      });
      assert.equal(r.code, 0, `${r.stderr}\n${await node.agentLog()}`);
      // IPv6-only node: one /128 and no IPv4 address at all.
      assert.match(r.stdout, /inet6 fd00:3b::[0-9a-f:]+\/128 scope global/);
      assert.doesNotMatch(r.stdout, /\binet /);
      assert.deepEqual(await podmanContainers(name), []);
      assert.deepEqual(await node.flockLinks(), []);
      assert.deepEqual(await podRoutes(node), []);
      assert.deepEqual(storedAttachments(node), []);
    } finally {
      await podmanRemove(name, opts).catch(() => {});
      await node.remove();
      await removeCniCache(network);
    }
  },
});

Deno.test({
  name: "podman --ip6 / --ip on flock: the container gets exactly the addresses asked for",
  ...ROOT_ONLY,
  async fn() {
    const { node, network, opts } = await podmanOnFlock({
      cidr6: "fd00:3c::/64",
      cidr4: "10.60.0.0/24",
    });
    const showAddresses = ["ip", "-o", "addr", "show", "dev", "eth0"];
    // podman 4.3 passes one static address as CNI_ARGS IP=…, two through runtimeConfig.ips.
    const cases = [
      { runArgs: ["--ip6", "fd00:3c::77"], want6: "fd00:3c::77", want4: /inet 10\.60\.0\.\d+\/32/ },
      {
        runArgs: ["--ip6", "fd00:3c::78", "--ip", "10.60.0.78"],
        want6: "fd00:3c::78",
        want4: /inet 10\.60\.0\.78\/32/,
      },
    ];
    const names: string[] = [];
    try {
      for (const c of cases) {
        const name = uniqueContainerName("flk-e2e-ip");
        names.push(name);
        const r = await podmanRun({
          ...opts,
          name,
          network,
          runArgs: c.runArgs,
          cmd: showAddresses,
        });
        assert.equal(r.code, 0, `${c.runArgs.join(" ")}: ${r.stderr}\n${await node.agentLog()}`);
        assert.match(r.stdout, new RegExp(`inet6 ${c.want6}/128 scope global`), r.stdout);
        assert.match(r.stdout, c.want4, r.stdout);
      }
      // An address outside the node's CIDR: podman reports flock's error naming the field.
      const name = uniqueContainerName("flk-e2e-ip");
      names.push(name);
      const bad = await podmanRun({
        ...opts,
        name,
        network,
        runArgs: ["--ip6", "fd00:3d::1"],
        cmd: ["true"],
      });
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /CNI_ARGS IP: fd00:3d::1 is outside the node's IPv6 CIDR/);
      assert.deepEqual(await node.flockLinks(), []);
      assert.deepEqual(storedAttachments(node), []);
    } finally {
      for (const name of names) await podmanRemove(name, opts).catch(() => {});
      await node.remove();
      await removeCniCache(network);
    }
  },
});
