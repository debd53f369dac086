/**
 * BGP password Secrets (agent/kube/bgp_secrets.ts) read through a real kube-apiserver as deploy/'s
 * ServiceAccount (its namespaced `get` Role), while the Secret is rotated, deleted and recreated:
 * each change reaches the routing layer through `onChange` exactly as the module doc promises
 * (rotation: the new password; deletion: the password last read kept, so the session stays up, and
 * a problem naming the Secret; recreation: the recreated password), and the periodic reads keep
 * going after each.
 */

import assert from "node:assert/strict";
import { type KubeCluster, startKubeWithFlock } from "../helpers/kube.ts";
import { eventually } from "../helpers/eventually.ts";
import { KubeApi } from "../../agent/kube/api.ts";
import { BgpSecrets } from "../../agent/kube/bgp_secrets.ts";
import { parseNodeConfig } from "../../agent/config.ts";

const NAMESPACE = "kube-system";
const SECRET = "tor-passwords";

async function putSecret(kube: KubeCluster, password: string): Promise<void> {
  await kube.apply({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: SECRET, namespace: NAMESPACE },
    stringData: { tor1: password },
  });
}

Deno.test({
  name: "BGP password Secret rotated, deleted, recreated: each change reaches BIRD's input",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using kube = await startKubeWithFlock();
    await putSecret(kube, "first-secret");
    const kubeconfig = await kube.kubeconfigFor(await kube.tokenFor(NAMESPACE, "flock"));
    const api = new KubeApi({ kubeconfig });
    let changes = 0;
    const logs: string[] = [];
    const secrets = new BgpSecrets({
      namespace: NAMESPACE,
      readSecret: (ns, name) => api.readSecretData(ns, name),
      onChange: () => changes++,
      refreshMs: 300,
      retryMs: 300,
      log: (f) => logs.push(JSON.stringify(f)),
    });
    const config = parseNodeConfig(
      {
        apiVersion: "flock.fritzlab.net/v1alpha1",
        kind: "NodeConfig",
        metadata: { name: "n1" },
        spec: {
          cidr6: "fd00:1::/64",
          bgp: {
            asn: 65001,
            peers: [{
              address: "2001:db8::ff",
              asn: 65000,
              passwordSecretRef: { name: SECRET, key: "tor1" },
            }],
          },
        },
      },
      "NodeConfig n1",
      { secretRefs: true },
    );
    const password = () => Promise.resolve([...secrets.passwords.values()].join());
    try {
      await secrets.use(config);
      assert.equal(await password(), "first-secret");
      assert.deepEqual(secrets.problems.map((p) => p.reason), []);

      await putSecret(kube, "second-secret");
      await eventually("the rotated password", password, (p) => p === "second-secret", 10_000);
      assert.equal(changes, 1);

      await kube.kubectlOk(["delete", "secret", SECRET, "-n", NAMESPACE]);
      await eventually(
        "the deletion reported",
        () => Promise.resolve(secrets.problems.map((p) => `${p.reason} kept=${p.kept}`)),
        (p) => p.join() === "the Secret does not exist kept=true",
        10_000,
      );
      // The peer stays in bird.conf with the password it has: its session is not cut.
      assert.equal(await password(), "second-secret");
      assert.equal(changes, 2);
      assert.ok(logs.some((l) => l.includes("keep the password last read")), logs.join("\n"));

      await putSecret(kube, "third-secret");
      await eventually("the recreated password", password, (p) => p === "third-secret", 10_000);
      assert.deepEqual(secrets.problems.map((p) => p.reason), []);
      assert.equal(changes, 3);
      // Never a value in a log line.
      assert.ok(!logs.join("\n").includes("-secret"), logs.join("\n"));
    } finally {
      secrets.stop();
    }
  },
});
