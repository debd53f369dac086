/**
 * BGP passwords from a Secret in cluster mode, against a real kube-apiserver (etcd, TLS, RBAC):
 * a node namespace with BIRD and an agent authenticated as deploy/'s ServiceAccount (so the
 * Secret is read through the namespaced Role of deploy/rbac.yaml), its namespace from
 * POD_NAMESPACE as the DaemonSet sets it.
 *
 * - a peer with `passwordSecretRef` is rendered into the bird.conf BIRD runs with the Secret's
 *   password; `BGPPasswordsAvailable` is True;
 * - a NodeConfig change adds a peer whose Secret does not exist yet: that peer is left out of
 *   bird.conf (never rendered without its password), the condition turns False naming the
 *   Secret and key, an error line is logged; once the Secret is created the peer comes back and
 *   the condition clears, without an agent restart;
 * - the Secret deleted (a rotation by delete + create, or a mistake): the peer stays in bird.conf
 *   with the password last read (its session is not cut), the condition is False with reason
 *   `LastPasswordKept`, a warning is logged; the Secret recreated with a new password: rendered;
 * - no password appears in the agent's log, `flock status --json` or the NodeConfig status.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { type BgpLabNode, type BgpNodePlan, startBgpNode } from "../helpers/bgp_lab.ts";
import { Fabric } from "../helpers/fabric.ts";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import type { BgpPeerSpec, NodeConfigSpec } from "../../agent/config.ts";

const NAMESPACE = "kube-system";
const NODE = "flk-pw-node";
/** Bound of every wait for the agent to act on a change (the Secret retry runs every 5 s). */
const WAIT_MS = 30_000;

const PASSWORD_1 = `tor1-${crypto.randomUUID().slice(0, 8)}`;
const PASSWORD_2 = `tor2-${crypto.randomUUID().slice(0, 8)}`;
const PASSWORD_3 = `tor1-new-${crypto.randomUUID().slice(0, 8)}`;

const TOR_1 = { address: "fd00:a::1", asn: 65000 };
const TOR_2 = { address: "fd00:a::2", asn: 65000 };

function spec(peers: BgpPeerSpec[]): NodeConfigSpec {
  return { cidr6: "fd00:60::/64", cidr4: "10.60.0.0/24", bgp: { asn: 64512, peers } };
}

const PLAN: BgpNodePlan = {
  name: NODE,
  ipv4: "10.0.0.11",
  ipv6: "fd00:a::11",
  spec: spec([]),
};

function nodeConfig(peers: BgpPeerSpec[]) {
  return {
    apiVersion: "flock.fritzlab.net/v1alpha1",
    kind: "NodeConfig",
    metadata: { name: NODE },
    spec: spec(peers),
  };
}

function secret(name: string, data: Record<string, string>) {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace: NAMESPACE },
    stringData: data,
  };
}

/** The `protocol bgp` block of bird.conf whose neighbour is `address`, if any. */
function peerBlock(conf: string, address: string): string | undefined {
  return conf.split(/^(?=protocol bgp )/m).find((b) => b.includes(`neighbor ${address} as`));
}

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

async function nodeConfigStatus(kube: KubeCluster) {
  const obj = JSON.parse(await kube.kubectlOk(["get", "nodeconfig", NODE, "-o", "json"]));
  return (obj.status ?? {}) as { conditions?: Condition[] };
}

function passwordCondition(status: { conditions?: Condition[] }): Condition | undefined {
  return status.conditions?.find((c) => c.type === "BGPPasswordsAvailable");
}

/** What bird.conf says of the two peers: their password line, or absent. */
async function renderedPeers(n: BgpLabNode) {
  const conf = await Deno.readTextFile(n.bird.configPath);
  const password = (address: string) => {
    const block = peerBlock(conf, address);
    return block === undefined ? "absent" : block.match(/^\s*password "(.*)";$/m)?.[1] ?? "none";
  };
  return { tor1: password(TOR_1.address), tor2: password(TOR_2.address) };
}

Deno.test({
  name: "kube BGP passwords: passwordSecretRef read from a Secret, missing ones reported",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using cleanup = new AsyncDisposableStack();
    const kube = cleanup.use(await startKubeWithFlock());
    const fabric = cleanup.use(await Fabric.start());
    await kube.apply([
      secret("bgp-passwords", { "tor-1": PASSWORD_1 }),
      nodeConfig([{ ...TOR_1, passwordSecretRef: { name: "bgp-passwords", key: "tor-1" } }]),
      {
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: NODE },
        status: { addresses: [{ type: "InternalIP", address: PLAN.ipv4 }] },
      },
    ]);
    /** Waits (bounded) for the NodeConfig's BGPPasswordsAvailable condition to be True again. */
    const passwordsAvailableAgain = () =>
      eventually(
        "BGPPasswordsAvailable True again",
        () => nodeConfigStatus(kube),
        (s) => passwordCondition(s)?.status === "True",
        WAIT_MS,
      );
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor(NAMESPACE, "flock"));
    const node = await startBgpNode(fabric, PLAN, cleanup, {
      kubeconfig,
      env: { POD_NAMESPACE: NAMESPACE },
    });
    const step = async (name: string, fn: () => Promise<void>) => {
      if (!await t.step(name, fn)) throw new Error(`step failed: ${name}`);
    };
    try {
      await step("the Secret's password is in bird.conf; the condition is True", async () => {
        await eventually(
          "tor-1 rendered with its password",
          () => renderedPeers(node),
          (p) => p.tor1 === PASSWORD_1 && p.tor2 === "absent",
          WAIT_MS,
        );
        const status = await eventually(
          "BGPPasswordsAvailable True",
          () => nodeConfigStatus(kube),
          (s) => passwordCondition(s)?.status === "True",
          WAIT_MS,
        );
        assert.equal(passwordCondition(status)?.reason, "PasswordsAvailable");
      });

      await step("a peer whose Secret is missing is left out and reported", async () => {
        await kube.apply(nodeConfig([
          { ...TOR_1, passwordSecretRef: { name: "bgp-passwords", key: "tor-1" } },
          { ...TOR_2, passwordSecretRef: { name: "bgp-late", key: "tor-2" } },
        ]));
        const status = await eventually(
          "BGPPasswordsAvailable False",
          () => nodeConfigStatus(kube),
          (s) => passwordCondition(s)?.status === "False",
          WAIT_MS,
        );
        const cond = passwordCondition(status)!;
        assert.equal(cond.reason, "BGPPasswordUnavailable");
        assert.match(cond.message, /secret kube-system\/bgp-late key "tor-2"/);
        assert.match(cond.message, /does not exist/);
        assert.match(cond.message, /peer fd00:a::2 left out/);
        // BIRD took the new spec (the reload went through) without the peer it cannot protect.
        assert.deepEqual(await renderedPeers(node), { tor1: PASSWORD_1, tor2: "absent" });
        const log = await node.flock.agentLog();
        assert.match(
          log,
          /"msg":"BGP password unavailable[^"]*".*"secret":"kube-system\/bgp-late"/,
        );
        assert.match(log, /"level":"error"[^\n]*BGP password unavailable/);
      });

      await step("the Secret created: the peer comes back, the condition clears", async () => {
        await kube.apply(secret("bgp-late", { "tor-2": PASSWORD_2 }));
        await eventually(
          "tor-2 rendered with its password",
          () => renderedPeers(node),
          (p) => p.tor1 === PASSWORD_1 && p.tor2 === PASSWORD_2,
          WAIT_MS,
        );
        await passwordsAvailableAgain();
      });

      await step(
        "the Secret deleted: the last password stays, reported; recreated: used",
        async () => {
          await kube.kubectlOk(["delete", "secret", "bgp-passwords", "-n", NAMESPACE]);
          // A spec change reads the Secrets at once (the periodic read comes only every 60 s; its
          // path is kube_secret_churn_test's): before, it rendered tor-1 without its Secret.
          const peers = [
            { ...TOR_1, passwordSecretRef: { name: "bgp-passwords", key: "tor-1" } },
            { ...TOR_2, passwordSecretRef: { name: "bgp-late", key: "tor-2" } },
          ];
          await kube.apply({ ...nodeConfig(peers), spec: { ...spec(peers), mtu: 1400 } });
          const status = await eventually(
            "BGPPasswordsAvailable False, password kept",
            () => nodeConfigStatus(kube),
            (s) => passwordCondition(s)?.reason === "LastPasswordKept",
            WAIT_MS,
          );
          assert.equal(passwordCondition(status)?.status, "False");
          assert.match(
            passwordCondition(status)!.message,
            /secret kube-system\/bgp-passwords key "tor-1": the Secret does not exist; peer fd00:a::1 keeps the password last read/,
          );
          assert.deepEqual(await renderedPeers(node), { tor1: PASSWORD_1, tor2: PASSWORD_2 });
          assert.match(
            await node.flock.agentLog(),
            /"level":"warn"[^\n]*its peers keep the password last read[^\n]*bgp-passwords/,
          );
          await kube.apply(secret("bgp-passwords", { "tor-1": PASSWORD_3 }));
          await eventually(
            "tor-1 rendered with the recreated Secret's password",
            () => renderedPeers(node),
            (p) => p.tor1 === PASSWORD_3 && p.tor2 === PASSWORD_2,
            WAIT_MS,
          );
          await passwordsAvailableAgain();
        },
      );

      await step("no password in the log, flock status --json or the NodeConfig", async () => {
        const status = await runOk([
          node.flock.executable,
          "status",
          "--json",
          "--socket",
          node.flock.socketPath,
        ]);
        const object = await kube.kubectlOk(["get", "nodeconfig", NODE, "-o", "json"]);
        const log = await node.flock.agentLog();
        assert.ok(log.length > 0);
        for (
          const [what, text] of [["agent log", log], ["status", status.stdout], ["NC", object]]
        ) {
          for (const pw of [PASSWORD_1, PASSWORD_2, PASSWORD_3]) {
            assert.ok(!text.includes(pw), `${what} shows a password`);
          }
        }
      });
    } catch (e) {
      console.error(`agent log:\n${await node.flock.agentLog()}`);
      throw e;
    }
  },
});
