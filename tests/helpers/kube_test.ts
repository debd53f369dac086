import assert from "node:assert/strict";
import { ADMIN_USER, KubeCluster } from "./kube.ts";

/** True when something accepts TCP connections on 127.0.0.1:`port`. */
async function listening(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "KubeCluster: TLS + RBAC API server, TokenRequest tokens, restart keeps objects, stop cleans up",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const kube = await KubeCluster.start();
    try {
      // Real TLS: the serving certificate verifies against the harness CA for 127.0.0.1.
      const ready = await kube.fetch("/readyz");
      assert.equal(ready.status, 200);
      assert.equal((await ready.text()).trim(), "ok");
      const version = JSON.parse(await kube.kubectlOk(["version", "-o", "json"]));
      assert.match(version.serverVersion.gitVersion, /^v1\.34\./);
      assert.equal(version.clientVersion.gitVersion, version.serverVersion.gitVersion);

      const admin = JSON.parse(await kube.kubectlOk(["auth", "whoami", "-o", "json"]));
      assert.equal(admin.status.userInfo.username, ADMIN_USER);
      assert.ok(admin.status.userInfo.groups.includes("system:masters"));

      // A ServiceAccount token from the TokenRequest API: authenticated, but RBAC grants it nothing.
      await kube.kubectlOk(["create", "serviceaccount", "probe", "-n", "default"]);
      const token = await kube.tokenFor("default", "probe");
      assert.equal(token.split(".").length, 3, "a JWT");
      const kubeconfig = await kube.kubeconfigFor(token);
      const sa = JSON.parse(await kube.kubectlOk(["auth", "whoami", "-o", "json"], { kubeconfig }));
      assert.equal(sa.status.userInfo.username, "system:serviceaccount:default:probe");
      const denied = await kube.kubectl(["get", "pods"], { kubeconfig });
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /Forbidden/);

      // Objects live in etcd: an API server restart keeps them, on the same address.
      await kube.apply({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "keep", namespace: "default" },
        data: { a: "1" },
      });
      await kube.restartApiserver();
      const cm = JSON.parse(
        await kube.kubectlOk(["get", "configmap", "keep", "-n", "default", "-o", "json"]),
      );
      assert.equal(cm.data.a, "1");
      // Tokens stay valid across the restart (same signing key).
      await kube.kubectlOk(["auth", "whoami"], { kubeconfig });
    } finally {
      await kube.stop();
    }
    assert.equal(await listening(kube.apiserverPort), false, "kube-apiserver is gone");
    assert.equal(await listening(kube.etcdPort), false, "etcd is gone");
    await assert.rejects(Deno.stat(kube.dir), Deno.errors.NotFound);
  },
});
