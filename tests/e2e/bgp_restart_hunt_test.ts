/**
 * BGP hunt, round 2: what the ToR sees through restarts of BIRD and of the agent, anycast
 * holders coming and going, routes flock did not mean to announce, and next hops. Two flock
 * nodes (agent + BIRD each) under a gobgpd ToR: n1 dual-stack eBGP over IPv4, n2 IPv6-only
 * iBGP over a multihop IPv6 session. Everything runs in namespaces this test creates.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY, run } from "../helpers/exec.ts";
import { ping, TestNamespace } from "../helpers/flock.ts";
import { type BgpLabNode, type BgpNodePlan, startBgpNode } from "../helpers/bgp_lab.ts";
import { GobgpTor, type RibPath } from "../helpers/gobgp.ts";
import { bootstrapBirdConfig } from "../helpers/bird.ts";

const TOR_AS = 65000;
const ANYCAST6 = "fd00:ffff::/112";
const ANYCAST4 = "10.255.255.0/24";
const ANY6 = "fd00:ffff::7";
const ANY4 = "10.255.255.7";

const N1: BgpNodePlan = {
  name: "hunt-n1",
  ipv4: "10.0.0.11",
  ipv6: "fd00:a::11",
  spec: {
    cidr6: "fd00:1::/64",
    cidr4: "10.244.1.0/24",
    anycastCIDRs: [ANYCAST6, ANYCAST4],
    bgp: {
      asn: 65001,
      routerID: "10.0.0.11",
      peers: [{ address: "10.0.0.1", asn: TOR_AS }],
      gracefulRestart: { enabled: true, restartTime: 120 },
    },
  },
};

const N2: BgpNodePlan = {
  name: "hunt-n2",
  ipv6: "fd00:a::12",
  spec: {
    cidr6: "fd00:2::/64",
    anycastCIDRs: [ANYCAST6],
    bgp: {
      asn: TOR_AS, // iBGP
      routerID: "10.0.0.12",
      peers: [{ address: "fd00:a::1", asn: TOR_AS, multihop: 2 }],
      gracefulRestart: { enabled: true, restartTime: 120 },
    },
  },
};

function annotations(anycast: string) {
  return {
    runtimeConfig: {
      "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/anycast": anycast },
    },
  };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Both families of the ToR's RIB in one map. */
async function ribBoth(tor: GobgpTor): Promise<Record<string, RibPath[]>> {
  return { ...await tor.rib("ipv6"), ...await tor.rib("ipv4") };
}

/**
 * Polls the ToR's RIB every 20 ms while `during` runs; counts the polls in which a watched
 * prefix was missing or held only stale paths.
 */
async function watchRib(
  tor: GobgpTor,
  prefixes: string[],
  during: () => Promise<void>,
): Promise<{ missing: Record<string, number>; stale: Record<string, number>; polls: number }> {
  const missing: Record<string, number> = Object.fromEntries(prefixes.map((p) => [p, 0]));
  const stale: Record<string, number> = Object.fromEntries(prefixes.map((p) => [p, 0]));
  let polls = 0;
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const rib = await ribBoth(tor);
      polls++;
      for (const p of prefixes) {
        if (!(p in rib)) missing[p]++;
        else if (rib[p].every((x) => x.stale)) stale[p]++;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    await during();
  } finally {
    watching = false;
    await watcher;
  }
  return { missing, stale, polls };
}

Deno.test({
  name: "bgp hunt: BIRD and agent restarts, anycast holders, export filter, next hops",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using cleanup = new AsyncDisposableStack();
    const tor = await GobgpTor.start({
      asn: TOR_AS,
      routerId: "10.0.0.1",
      addresses: ["10.0.0.1/24", "fd00:a::1/64"],
      neighbors: [
        { address: N1.ipv4!, asn: 65001, addPaths: true },
        { address: N2.ipv6, asn: TOR_AS, addPaths: true },
      ],
    });
    cleanup.use(tor);
    const n1: BgpLabNode = await startBgpNode(tor, N1, cleanup);
    const n2: BgpLabNode = await startBgpNode(tor, N2, cleanup);
    const pods = new Map<string, TestNamespace>();
    const addPod = async (node: BgpLabNode, id: string, anycast?: string) => {
      const ns = await TestNamespace.create("flk-hunt");
      cleanup.use(ns);
      const r = await node.flock.cni("ADD", {
        containerId: id,
        netns: ns.path,
        extraConfig: anycast ? annotations(anycast) : undefined,
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      pods.set(id, ns);
      return r.json as { ips: { address: string }[] };
    };
    const delPod = async (node: BgpLabNode, id: string) => {
      const r = await node.flock.cni("DEL", { containerId: id, netns: pods.get(id)!.path });
      assert.equal(r.code, 0, r.stdout + r.stderr);
    };
    const status = async (node: BgpLabNode) => {
      const r = await run([
        node.flock.executable,
        "status",
        "--socket",
        node.flock.socketPath,
        "--json",
      ], { timeoutMs: 30_000 });
      return JSON.parse(r.stdout);
    };

    let failed = false;
    const step = async (name: string, fn: () => Promise<void>) => {
      if (!await t.step(name, fn)) failed = true;
    };
    try {
      await step("sessions up, summaries at the ToR", async () => {
        await tor.waitEstablished();
        await tor.waitRib("ipv6", (rib) => "fd00:1::/64" in rib && "fd00:2::/64" in rib);
        await tor.waitRib("ipv4", (rib) => "10.244.1.0/24" in rib);
      });

      await step("next hops: global addresses; no link-local to the multihop peer", async () => {
        const rib = await tor.rib("ipv6");
        const n1Path = JSON.stringify(rib["fd00:1::/64"]);
        const n2Path = JSON.stringify(rib["fd00:2::/64"]);
        assert.match(n1Path, /"nexthop":"fd00:a::11"/, n1Path);
        assert.match(n2Path, /"nexthop":"fd00:a::12"/, n2Path);
        assert.doesNotMatch(n2Path, /fe80/i, `multihop iBGP path: ${n2Path}`);
        const rib4 = await tor.rib("ipv4");
        assert.match(JSON.stringify(rib4["10.244.1.0/24"]), /"nexthop":"10\.0\.0\.11"/);
      });

      await step("export filter: hand-made proto 201 routes are never announced", async () => {
        const rogue6 = [
          "fd00:99::/64", // a stale summary after a CIDR change
          "fd00::/16", // covering the node's CIDR
          "fd00:1::/65", // inside it, not equal
          "fd00:ffff::/120", // inside the anycast CIDR, not a host route
          "fd00:fffe::1/128", // a host route outside the anycast CIDR
          "fd00:1::abcd/128", // a pod-like host route
        ];
        const rogue4 = ["10.99.0.0/24", "10.244.0.0/16", "10.255.254.1/32"];
        for (const p of rogue6) {
          await n1.flock.ns.ip(["-6", "route", "add", "blackhole", p, "proto", "201"]);
        }
        for (const p of rogue4) {
          await n1.flock.ns.ip(["-4", "route", "add", "blackhole", p, "proto", "201"]);
        }
        // A legitimate anycast holder in the same window: once its /128 arrives, BIRD has seen
        // the rogue routes' netlink events too.
        await addPod(n1, "filter-probe", `${ANY6}, ${ANY4}`);
        await tor.waitRib("ipv6", (rib) => `${ANY6}/128` in rib);
        await tor.waitRib("ipv4", (rib) => `${ANY4}/32` in rib);
        await new Promise((r) => setTimeout(r, 500));
        const prefixes = Object.keys(await ribBoth(tor));
        for (const p of [...rogue6, ...rogue4]) {
          assert.ok(!prefixes.includes(p), `${p} announced: ${prefixes.join(" ")}`);
        }
        for (const p of rogue6) await n1.flock.ns.ip(["-6", "route", "del", p, "proto", "201"]);
        for (const p of rogue4) await n1.flock.ns.ip(["-4", "route", "del", p, "proto", "201"]);
      });

      await step("two holders on one node, one deleted: never withdrawn", async () => {
        await addPod(n1, "second-holder", `${ANY6}, ${ANY4}`);
        await new Promise((r) => setTimeout(r, 300));
        const seen = await watchRib(tor, [`${ANY6}/128`, `${ANY4}/32`], async () => {
          await delPod(n1, "filter-probe");
          await new Promise((r) => setTimeout(r, 1500));
        });
        assert.deepEqual(seen.missing, { [`${ANY6}/128`]: 0, [`${ANY4}/32`]: 0 }, `${seen.polls}`);
        assert.ok(await ping(pods.get("second-holder")!, ANY6));
      });

      await step("holders on two nodes: two paths; the last one's DEL withdraws", async () => {
        await addPod(n2, "n2-holder", ANY6);
        const rib = await tor.waitRib("ipv6", (rib) => (rib[`${ANY6}/128`]?.length ?? 0) === 2);
        const from = rib[`${ANY6}/128`].map((p) => p["neighbor-ip"]).sort();
        assert.deepEqual(from, ["10.0.0.11", "fd00:a::12"]);
        await delPod(n2, "n2-holder");
        const t0 = Date.now();
        await tor.waitRib("ipv6", (rib) => (rib[`${ANY6}/128`]?.length ?? 0) === 1, 5_000);
        assert.ok(Date.now() - t0 < 2_000, `withdrawn after ${Date.now() - t0} ms`);
      });

      await step(
        "BIRD kill -9 and restart: nothing withdrawn, status shows BIRD down",
        async () => {
          const watched = ["fd00:1::/64", "10.244.1.0/24", `${ANY6}/128`, `${ANY4}/32`];
          const confBefore = await Deno.readTextFile(n1.bird.configPath);
          type Snapshot = {
            bgp: { sessions: { up: boolean }[]; error?: string };
            lastBirdReload: { ok: boolean; message?: string };
          };
          let downStatus: Snapshot | undefined;
          const seen = await watchRib(tor, watched, async () => {
            await n1.bird.kill("SIGKILL");
            // The agent notices within its check period (3 s): the last reload is not ok.
            downStatus = await waitFor("flock status saying BIRD is down", async () => {
              const s: Snapshot = await status(n1);
              return s.lastBirdReload.ok ? undefined : s;
            }, 10_000);
            await n1.bird.launch({ recover: true });
            await tor.waitEstablished();
            await tor.waitRib(
              "ipv6",
              (rib) =>
                watched.filter((p) => p.includes(":")).every((p) =>
                  p in rib && rib[p].some((x) => !x.stale)
                ),
            );
            await tor.waitRib(
              "ipv4",
              (rib) =>
                watched.filter((p) => !p.includes(":")).every((p) =>
                  p in rib && rib[p].some((x) => !x.stale)
                ),
            );
          });
          assert.deepEqual(
            Object.values(seen.missing),
            [0, 0, 0, 0],
            `missing: ${JSON.stringify(seen.missing)}`,
          );
          assert.ok(
            downStatus!.bgp.error !== undefined || downStatus!.bgp.sessions.every((s) => !s.up),
            `status while BIRD was down: ${JSON.stringify(downStatus!.bgp)}`,
          );
          assert.match(downStatus!.lastBirdReload.message ?? "", /^unreachable/);
          assert.equal(await Deno.readTextFile(n1.bird.configPath), confBefore);
          const up = await waitFor("status after BIRD's restart", async () => {
            const s = await status(n1);
            return s.bgp.sessions.some((x: { up: boolean }) => x.up) ? s : undefined;
          });
          assert.equal(up.lastBirdReload.ok, true);
        },
      );

      await step("BIRD restarted on a stale bird.conf: the agent applies its own", async () => {
        // A sidecar whose shared bird.conf was lost starts on the bootstrap config again.
        const seen = await watchRib(tor, ["fd00:1::/64", `${ANY6}/128`], async () => {
          await n1.bird.kill("SIGKILL");
          await Deno.writeTextFile(n1.bird.configPath, bootstrapBirdConfig("192.0.2.1"));
          await n1.bird.launch({ recover: true });
          await waitFor("n1's session back after a BIRD restart on a stale config", async () => {
            const shown = await n1.bird.birdc(["show", "protocols"]);
            return /peer_10_0_0_1\s+BGP\s+---\s+up/.test(shown.stdout);
          }, 20_000);
          await tor.waitEstablished();
          await tor.waitRib(
            "ipv6",
            (rib) => ["fd00:1::/64", `${ANY6}/128`].every((p) => p in rib && !rib[p][0].stale),
          );
        });
        assert.deepEqual(Object.values(seen.missing), [0, 0], JSON.stringify(seen.missing));
      });

      await step("agent kill -9: bird.conf identical, session never restarted", async () => {
        const confBefore = await Deno.readTextFile(n1.bird.configPath);
        const before = await n1.bird.birdc(["show", "protocols", "all", "peer_10_0_0_1"]);
        const since = /BGP\s+---\s+up\s+(\S+ \S+)/.exec(before.stdout)?.[1];
        assert.ok(since, before.stdout);
        // Two IPv4 holders: a's netns vanishes while the agent is down (the kernel drops the
        // whole IPv4 multipath route with a's veth); b must be announced again after restart.
        await addPod(n1, "third-holder", `${ANY6}, ${ANY4}`);
        await new Promise((r) => setTimeout(r, 300));
        const seen = await watchRib(tor, ["fd00:1::/64", `${ANY6}/128`], async () => {
          await n1.flock.kill("SIGKILL");
          await pods.get("third-holder")!.remove();
          await n1.flock.startAgent();
          await n1.flock.settled();
          await new Promise((r) => setTimeout(r, 1000));
        });
        // Graceful restart is BIRD's: an agent restart leaves the sessions and the paths alone.
        assert.deepEqual(Object.values(seen.missing), [0, 0], JSON.stringify(seen.missing));
        assert.deepEqual(Object.values(seen.stale), [0, 0], JSON.stringify(seen.stale));
        assert.equal(await Deno.readTextFile(n1.bird.configPath), confBefore);
        const after = await n1.bird.birdc(["show", "protocols", "all", "peer_10_0_0_1"]);
        assert.equal(/BGP\s+---\s+up\s+(\S+ \S+)/.exec(after.stdout)?.[1], since, after.stdout);
        await tor.waitRib("ipv4", (rib) => `${ANY4}/32` in rib, 15_000);
        await tor.waitRib("ipv6", (rib) => `${ANY6}/128` in rib, 15_000);
        // The last holder goes: withdrawn.
        await delPod(n1, "second-holder");
        await tor.waitRib("ipv6", (rib) => !(`${ANY6}/128` in rib), 5_000);
        await tor.waitRib("ipv4", (rib) => !(`${ANY4}/32` in rib), 5_000);
      });
      if (failed) throw new Error("a step failed");
    } catch (err) {
      for (const n of [n1, n2]) {
        console.error(`--- ${n.plan.name} agent log\n${(await n.flock.agentLog()).slice(-4000)}`);
        console.error(`--- ${n.plan.name} bird log\n${(await n.bird.log()).slice(-3000)}`);
      }
      console.error(`--- tor log\n${(await tor.log()).slice(-3000)}`);
      throw err;
    }
  },
});
