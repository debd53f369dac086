/**
 * A NodeConfig change that moves a BGP peer's `passwordSecretRef` to another Secret (reviewer
 * R2's bug): the agent renders bird.conf from the config in force and the passwords it has, and
 * leaves out a peer whose password it lacks (routing.ts birdInputFor). Cluster mode once handed
 * it the new spec's passwords alone before the new spec was in force, so BIRD reloaded without
 * the peer (its session torn down) whenever the reconfigure took longer than BirdControl's 50 ms
 * coalescing window, and kept running without it if the reconfigure failed.
 *
 * The check: every password set the agent is handed covers the Secret refs of the config in
 * force at that moment. Self-contained: the scripted API of fake_cluster.ts and an agent that
 * records the calls.
 */

import assert from "node:assert/strict";
import type { ClusterMode } from "./cluster.ts";
import { NODECONFIG_PATH } from "./api.ts";
import { type NodeConfig, secretKeyId } from "../config.ts";
import { FakeAgent, FakeApi, fakeCluster, until } from "../../tests/helpers/fake_cluster.ts";

/** Records, at each password hand-over, which refs of the config in force it lacked. */
class RecordingAgent extends FakeAgent {
  readonly uncovered: string[] = [];
  setSecretPasswords(passwords: ReadonlyMap<string, string>): Promise<void> {
    for (const peer of this.node?.spec.bgp?.peers ?? []) {
      const ref = peer.passwordSecretRef;
      if (ref && !passwords.has(secretKeyId(ref))) {
        this.uncovered.push(`peer ${peer.address} (${secretKeyId(ref)}) left out of bird.conf`);
      }
    }
    return Promise.resolve();
  }
  /** Set: every reconfigure fails after its wait, the old config staying in force. */
  failReconfigure = false;
  reconfigures = 0;
  override async reconfigure(node: NodeConfig): Promise<void> {
    // A reconfigure waits for requests in progress and reconciles: longer than BIRD's
    // coalescing window.
    await new Promise((r) => setTimeout(r, 100));
    this.reconfigures++;
    if (this.failReconfigure) throw new Error("injected: reconcile failed");
    await super.reconfigure(node);
  }
}

function spec(secret: string) {
  return {
    cidr6: "fd00:aa::/64",
    bgp: {
      asn: 65001,
      peers: [{
        address: "fd00:1::1",
        asn: 65000,
        passwordSecretRef: { name: secret, key: "password" },
      }],
    },
  };
}

/** Starts cluster mode on a NodeConfig whose peer uses Secret "bgp-old", then moves it. */
async function moveSecretRef(
  agent: RecordingAgent,
  check: (cluster: ClusterMode) => Promise<void>,
): Promise<void> {
  const api = new FakeApi();
  api.secretData = (name) => ({ password: btoa(`pw-of-${name}`) });
  api.objects.push({
    metadata: { name: "n1", resourceVersion: "1", generation: 1 },
    spec: spec("bgp-old"),
  });
  const cluster = fakeCluster(api);
  cluster.start(agent, (e) => {
    throw e;
  });
  try {
    await cluster.configured;
    await until("the NodeConfig watch", () => api.watchers.has(NODECONFIG_PATH));
    api.edit(spec("bgp-new"), 2);
    await check(cluster);
  } finally {
    await cluster.stop();
  }
}

Deno.test(
  "cluster: moving a peer's passwordSecretRef to another Secret never leaves the peer without a " +
    "password for the config in force",
  async () => {
    const agent = new RecordingAgent();
    await moveSecretRef(agent, async (cluster) => {
      await until(
        "the moved spec in force",
        () => agent.node?.spec.bgp?.peers?.[0].passwordSecretRef?.name === "bgp-new",
      );
      await until("the old Secret no longer followed", () => cluster.secrets.passwords.size === 1);
      assert.deepEqual(agent.uncovered, []);
      assert.deepEqual([...cluster.secrets.passwords.keys()], ["bgp-new/password"]);
    });
  },
);

Deno.test(
  "cluster: a failed change that moves a peer's passwordSecretRef keeps the peer's password " +
    "of the config still in force, and follows only that config's Secret",
  async () => {
    const agent = new RecordingAgent();
    agent.failReconfigure = true;
    await moveSecretRef(agent, async (cluster) => {
      await until("the reconfigure tried", () => agent.reconfigures === 1);
      await until("the new Secret no longer followed", () => cluster.secrets.passwords.size === 1);
      assert.equal(agent.node?.spec.bgp?.peers?.[0].passwordSecretRef?.name, "bgp-old");
      assert.deepEqual(agent.uncovered, []);
      assert.deepEqual([...cluster.secrets.passwords.keys()], ["bgp-old/password"]);
    });
  },
);
