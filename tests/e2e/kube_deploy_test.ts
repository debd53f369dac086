/**
 * deploy/ against a real kube-apiserver 1.34: every manifest passes server-side dry-run, the
 * NodeConfig schema refuses nonsense at admission, `kubectl get nodeconfigs` shows the printer
 * columns, and the agent's ServiceAccount can do exactly its job and nothing more (checked with
 * `kubectl auth can-i` and with real requests that get 403): among others, it reads Secrets of
 * its own namespace by name (BGP passwords) and cannot list, watch or write any.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { KubeCluster } from "../helpers/kube.ts";
import { nodeBoundToken } from "../helpers/kube_node_token.ts";
import { DEPLOY_DIR, DEPLOY_PARTS } from "../../scripts/deploy_bundle.ts";

const CRD = "nodeconfigs.flock.fritzlab.net";
const NAMESPACE = "kube-system";
const SERVICE_ACCOUNT = "flock";

/** A NodeConfig object named `name` with `spec`. */
function nodeConfig(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: "flock.fritzlab.net/v1alpha1",
    kind: "NodeConfig",
    metadata: { name },
    spec,
  };
}

/** kubectl arguments that merge-patch `body` into NodeConfig `name` via the status subresource. */
function statusPatch(name: string, body: Record<string, unknown>): string[] {
  return [
    "patch",
    "nodeconfig",
    name,
    "--subresource=status",
    "--type=merge",
    "-p",
    JSON.stringify(body),
  ];
}

/** Invalid specs and a piece of the message the API server must answer each with. */
const INVALID: { why: string; spec: Record<string, unknown>; message: RegExp }[] = [
  { why: "cidr6 not a CIDR", spec: { cidr6: "fd00:1::/129" }, message: /must be an IPv6 CIDR/ },
  { why: "cidr6 garbage", spec: { cidr6: "pods please" }, message: /must be an IPv6 CIDR/ },
  { why: "cidr6 host bits", spec: { cidr6: "fd00:1::1/64" }, message: /no bits set after/ },
  { why: "cidr4 given IPv6", spec: { cidr4: "fd00:1::/64" }, message: /must be an IPv4 CIDR/ },
  { why: "no CIDR at all", spec: { mtu: 1500 }, message: /at least one of cidr6 and cidr4/ },
  {
    why: "asn 0",
    spec: { cidr6: "fd00:1::/64", bgp: { asn: 0 } },
    message: /spec\.bgp\.asn.*greater than or equal to 1/,
  },
  {
    why: "asn 2^32",
    spec: { cidr6: "fd00:1::/64", bgp: { asn: 2 ** 32 } },
    message: /spec\.bgp\.asn.*less than or equal to 4294967295/,
  },
  {
    why: "peer asn missing",
    spec: { cidr6: "fd00:1::/64", bgp: { asn: 65001, peers: [{ address: "fd00::1" }] } },
    message: /spec\.bgp\.peers\[0\]\.asn: Required value/,
  },
  {
    why: "peers without own asn",
    spec: { cidr6: "fd00:1::/64", bgp: { peers: [{ address: "fd00::1", asn: 65000 }] } },
    message: /asn is required when peers or nodeMesh are set/,
  },
  {
    why: "routerID IPv6",
    spec: { cidr6: "fd00:1::/64", bgp: { asn: 65001, routerID: "fd00::1" } },
    message: /dotted-quad/,
  },
  {
    why: "password with a quote",
    spec: {
      cidr6: "fd00:1::/64",
      bgp: { asn: 65001, peers: [{ address: "fd00::1", asn: 65000, password: 'a"b' }] },
    },
    message: /spec\.bgp\.peers\[0\]\.password/,
  },
  {
    why: "password and passwordSecretRef together",
    spec: {
      cidr6: "fd00:1::/64",
      bgp: {
        asn: 65001,
        peers: [{
          address: "fd00::1",
          asn: 65000,
          password: "pw",
          passwordSecretRef: { name: "bgp", key: "k" },
        }],
      },
    },
    message: /passwordSecretRef: .*password and passwordSecretRef cannot be set together/,
  },
  {
    why: "passwordSecretRef without key",
    spec: {
      cidr6: "fd00:1::/64",
      bgp: {
        asn: 65001,
        peers: [{ address: "fd00::1", asn: 65000, passwordSecretRef: { name: "bgp" } }],
      },
    },
    message: /spec\.bgp\.peers\[0\]\.passwordSecretRef\.key: Required value/,
  },
  {
    why: "passwordSecretRef without name",
    spec: {
      cidr6: "fd00:1::/64",
      bgp: {
        asn: 65001,
        peers: [{ address: "fd00::1", asn: 65000, passwordSecretRef: { key: "k" } }],
      },
    },
    message: /spec\.bgp\.peers\[0\]\.passwordSecretRef\.name: Required value/,
  },
  {
    why: "passwordSecretRef with an invalid Secret name",
    spec: {
      cidr6: "fd00:1::/64",
      bgp: {
        asn: 65001,
        peers: [{
          address: "fd00::1",
          asn: 65000,
          passwordSecretRef: { name: "No_Such", key: "k" },
        }],
      },
    },
    message: /spec\.bgp\.peers\[0\]\.passwordSecretRef\.name: Invalid value/,
  },
  {
    why: "mtu 100",
    spec: { cidr4: "10.1.0.0/24", mtu: 100 },
    message: /greater than or equal to 576/,
  },
  {
    why: "mtu 1000 with IPv6",
    spec: { cidr6: "fd00:1::/64", mtu: 1000 },
    message: /at least 1280/,
  },
  {
    why: "anycast not a CIDR",
    spec: { cidr6: "fd00:1::/64", anycastCIDRs: ["fd00:ff::1"] },
    message: /anycastCIDRs\[0\]/,
  },
  {
    why: "unknown field",
    spec: { cidr6: "fd00:1::/64", cidr7: "10.0.0.0/8" },
    message: /unknown field "spec\.cidr7"/,
  },
  {
    why: "unknown nested field",
    spec: { cidr6: "fd00:1::/64", bgp: { asn: 65001, holdTime: 9 } },
    message: /unknown field "spec\.bgp\.holdTime"/,
  },
];

/** The rows of `kubectl get` output as header-keyed records. */
function table(text: string): Record<string, string>[] {
  const [header, ...rows] = text.trimEnd().split("\n");
  const columns = header.trim().split(/\s+/);
  return rows.map((row) => {
    const cells = row.trim().split(/\s+/);
    return Object.fromEntries(columns.map((c, i) => [c, cells[i]]));
  });
}

Deno.test({
  name: "deploy/ on a real kube-apiserver: dry-run, schema, printer columns, least-privilege RBAC",
  // The API server's client libraries keep sockets that outlive single steps.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using kube = await KubeCluster.start();

    await t.step("every manifest in deploy/ passes server-side dry-run", async () => {
      const files = [...DEPLOY_PARTS, "flock.yaml"];
      for await (const entry of Deno.readDir(DEPLOY_DIR)) {
        if (entry.name.endsWith(".yaml") && !files.includes(entry.name)) files.push(entry.name);
      }
      for (const file of files) {
        const r = await kube.kubectl(["apply", "--dry-run=server", "-f", join(DEPLOY_DIR, file)]);
        assert.equal(r.code, 0, `${file}: ${r.stderr}`);
        assert.match(r.stdout, /\(server dry run\)/, file);
      }
    });

    await t.step("the bundle applies for real", async () => {
      const out = await kube.kubectlOk(["apply", "-f", join(DEPLOY_DIR, "flock.yaml")]);
      for (
        const made of [
          `customresourcedefinition.apiextensions.k8s.io/${CRD} created`,
          "serviceaccount/flock created",
          "clusterrole.rbac.authorization.k8s.io/flock created",
          "clusterrolebinding.rbac.authorization.k8s.io/flock created",
          "role.rbac.authorization.k8s.io/flock-bgp-passwords created",
          "rolebinding.rbac.authorization.k8s.io/flock-bgp-passwords created",
          "validatingadmissionpolicy.admissionregistration.k8s.io/flock-own-node-status created",
          "validatingadmissionpolicybinding.admissionregistration.k8s.io/flock-own-node-status created",
          "configmap/flock-bird-bootstrap created",
          "daemonset.apps/flock created",
        ]
      ) assert.ok(out.includes(made), `missing "${made}" in:\n${out}`);
      await kube.waitForCrd(CRD);
    });

    await t.step("invalid NodeConfigs are rejected at admission", async () => {
      const failures: string[] = [];
      for (const [i, bad] of INVALID.entries()) {
        const name = `bad-${i}`;
        const r = await kube.kubectl(["apply", "-f", "-"], {
          stdin: JSON.stringify(nodeConfig(name, bad.spec)),
        });
        if (r.code === 0) failures.push(`${bad.why}: accepted`);
        else if (!bad.message.test(r.stderr)) {
          failures.push(`${bad.why}: wrong message: ${r.stderr.trim()}`);
        }
      }
      assert.deepEqual(failures, []);
      const left = await kube.kubectlOk(["get", "nodeconfigs", "-o", "name"]);
      assert.equal(left.trim(), "", "no invalid NodeConfig was stored");
      // A structural schema without preserve-unknown-fields: a client that skips field
      // validation gets its unknown field dropped, never stored.
      await kube.kubectlOk(["apply", "--validate=false", "-f", "-"], {
        stdin: JSON.stringify(nodeConfig("pruned", { cidr6: "fd00:1::/64", cidr7: "10.0.0.0/8" })),
      });
      const pruned = await kube.kubectlOk(["get", "nodeconfig", "pruned", "-o", "json"]);
      assert.deepEqual(JSON.parse(pruned).spec, { cidr6: "fd00:1::/64" });
      await kube.kubectlOk(["delete", "nodeconfig", "pruned"]);
    });

    await t.step("a valid NodeConfig is accepted and `kubectl get` shows the columns", async () => {
      await kube.apply(nodeConfig("node-1", {
        cidr6: "fd00:10:0:1::/64",
        cidr4: "10.244.1.0/24",
        mtu: 1450,
        anycastCIDRs: ["fd00:10:ffff::/112", "10.250.0.0/24"],
        bgp: {
          asn: 4200000001,
          routerID: "192.0.2.11",
          nodeMesh: true,
          peers: [{
            address: "fd00:ff::1",
            asn: 65000,
            password: "s3cret",
            multihop: 2,
            bfd: true,
          }],
          gracefulRestart: { enabled: true, restartTime: 120 },
        },
      }));
      // The agent's own writer would do this through the status subresource.
      await kube.kubectlOk(
        statusPatch("node-1", {
          status: { ready: true, pods: 3, bgpSessionsUp: 2, bgpSessions: 2 },
        }),
      );
      const rows = table(await kube.kubectlOk(["get", "nodeconfigs"]));
      assert.equal(rows.length, 1);
      const { AGE, ...row } = rows[0];
      assert.match(AGE, /^\d+[sm]/);
      assert.deepEqual(row, {
        NAME: "node-1",
        CIDR6: "fd00:10:0:1::/64",
        CIDR4: "10.244.1.0/24",
        PODS: "3",
        "BGP-UP": "2",
        READY: "true",
      });
      // Short name works too.
      assert.match(await kube.kubectlOk(["get", "fnc", "node-1", "-o", "name"]), /node-1/);
    });

    await t.step("RBAC: the flock ServiceAccount can do its job and nothing else", async () => {
      await kube.apply({ apiVersion: "v1", kind: "Node", metadata: { name: "node-1" } });
      await kube.apply({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "bgp-passwords", namespace: NAMESPACE },
        stringData: { peer: "s3cret" },
      });
      await kube.apply({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "elsewhere", namespace: "default" },
        stringData: { peer: "not for flock" },
      });
      await kube.apply({
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name: "web",
          namespace: "default",
          annotations: { "flock.fritzlab.net/ipv6": "auto" },
        },
        spec: { nodeName: "node-1", containers: [{ name: "web", image: "example.invalid/web:1" }] },
      });

      // The token as the kubelet mounts it into the agent's pod: bound to a pod on node-1
      // (deploy/node-policy.yaml refuses status writes with a token that names no node).
      const token = await nodeBoundToken(kube, NAMESPACE, SERVICE_ACCOUNT, "node-1");
      const kubeconfig = await kube.kubeconfigFor(token);
      const whoami = JSON.parse(
        await kube.kubectlOk(["auth", "whoami", "-o", "json"], { kubeconfig }),
      );
      assert.equal(whoami.status.userInfo.username, `system:serviceaccount:${NAMESPACE}:flock`);

      const canI = async (args: string[]) => {
        const r = await kube.kubectl(["auth", "can-i", ...args, `--token=${token}`], {
          kubeconfig,
        });
        assert.ok(r.code === 0 || r.code === 1, r.stderr);
        return r.stdout.trim();
      };
      const allowed = [
        ["list", "pods", "--all-namespaces"],
        ["watch", "pods", "--all-namespaces"],
        ["get", "pods", "-n", "default"],
        ["get", "nodes"],
        ["list", "nodes"],
        ["watch", "nodes"],
        ["get", "nodeconfigs.flock.fritzlab.net"],
        ["list", "nodeconfigs.flock.fritzlab.net"],
        ["watch", "nodeconfigs.flock.fritzlab.net"],
        ["patch", "nodeconfigs.flock.fritzlab.net", "--subresource=status"],
        ["update", "nodeconfigs.flock.fritzlab.net", "--subresource=status"],
        // BGP passwords (passwordSecretRef): one Secret by name, in its own namespace only.
        ["get", "secrets", "-n", NAMESPACE],
        ["get", "secret/bgp-passwords", "-n", NAMESPACE],
      ];
      const denied = [
        ["create", "pods", "-n", "default"],
        ["patch", "pods", "-n", "default"],
        ["delete", "pods", "-n", "default"],
        ["create", "pods", "--subresource=eviction", "-n", "default"],
        ["list", "secrets", "-n", NAMESPACE],
        ["watch", "secrets", "-n", NAMESPACE],
        ["create", "secrets", "-n", NAMESPACE],
        ["update", "secrets", "-n", NAMESPACE],
        ["patch", "secrets", "-n", NAMESPACE],
        ["delete", "secrets", "-n", NAMESPACE],
        ["get", "secrets", "-n", "default"],
        ["list", "secrets", "--all-namespaces"],
        ["get", "secrets", "--all-namespaces"],
        ["get", "configmaps", "-n", NAMESPACE],
        ["update", "nodeconfigs.flock.fritzlab.net"],
        ["patch", "nodeconfigs.flock.fritzlab.net"],
        ["create", "nodeconfigs.flock.fritzlab.net"],
        ["delete", "nodeconfigs.flock.fritzlab.net"],
        ["delete", "nodes"],
        ["patch", "nodes"],
        ["update", "nodes", "--subresource=status"],
        ["create", "serviceaccounts", "--subresource=token", "-n", NAMESPACE],
        ["delete", "*", "--all-namespaces"],
        ["create", "*", "--all-namespaces"],
        ["*", "*"],
      ];
      const wrong: string[] = [];
      for (const args of allowed) {
        if (await canI(args) !== "yes") wrong.push(`should be allowed: ${args.join(" ")}`);
      }
      for (const args of denied) {
        if (await canI(args) !== "no") wrong.push(`should be denied: ${args.join(" ")}`);
      }
      assert.deepEqual(wrong, []);

      // Real requests, as the agent makes them.
      const pods = JSON.parse(
        await kube.kubectlOk([
          "get",
          "pods",
          "--all-namespaces",
          "--field-selector=spec.nodeName=node-1",
          "-o",
          "json",
        ], { kubeconfig }),
      );
      // The pods on node-1: "web" and the agent's own (which its token is bound to).
      const onNode = pods.items.map((p: { metadata: { namespace: string; name: string } }) =>
        `${p.metadata.namespace}/${p.metadata.name}`
      ).sort();
      assert.equal(onNode.length, 2, onNode.join(" "));
      assert.equal(onNode[0], "default/web");
      assert.match(onNode[1], new RegExp(`^${NAMESPACE}/flock-node-1-`));
      const auth = { authorization: `Bearer ${token}` };
      const watch = await kube.fetch(
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&watch=1&timeoutSeconds=1",
        { headers: auth },
      );
      assert.equal(watch.status, 200);
      assert.match(await watch.text(), /"type":"ADDED"/);
      await kube.kubectlOk(["get", "node", "node-1"], { kubeconfig });
      await kube.kubectlOk(["get", "nodeconfigs"], { kubeconfig });
      // The status write as the agent makes it: a merge patch straight to the subresource (no
      // GET first, which is why the role has no `get` on nodeconfigs/status).
      const patched = await kube.fetch(
        "/apis/flock.fritzlab.net/v1alpha1/nodeconfigs/node-1/status",
        {
          method: "PATCH",
          headers: { ...auth, "content-type": "application/merge-patch+json" },
          body: JSON.stringify({ status: { pods: 7 }, spec: { mtu: 9000 } }),
        },
      );
      assert.equal(patched.status, 200, await patched.clone().text());
      await patched.body?.cancel();
      const after = JSON.parse(await kube.kubectlOk(["get", "nodeconfig", "node-1", "-o", "json"]));
      assert.equal(after.status.pods, 7);
      assert.equal(after.spec.mtu, 1450, "a status write cannot change the spec");

      // A BGP password Secret, read as the agent reads it: one GET by name in its namespace.
      const own = await kube.fetch(`/api/v1/namespaces/${NAMESPACE}/secrets/bgp-passwords`, {
        headers: auth,
      });
      assert.equal(own.status, 200, await own.clone().text());
      assert.equal(atob((await own.json()).data.peer), "s3cret");

      // ... and what it must not do gets 403 Forbidden from the server.
      const forbidden: [string, string[], string?][] = [
        ["read a secret of another namespace", ["get", "secret", "elsewhere", "-n", "default"]],
        ["list the secrets of its namespace", ["get", "secrets", "-n", NAMESPACE]],
        ["label a pod", ["label", "pod", "web", "-n", "default", "hacked=true"]],
        ["delete a pod", ["delete", "pod", "web", "-n", "default", "--wait=false"]],
        ["change a NodeConfig's spec", [
          "patch",
          "nodeconfig",
          "node-1",
          "--type=merge",
          "-p",
          '{"spec":{"mtu":9000}}',
        ]],
        ["delete a NodeConfig", ["delete", "nodeconfig", "node-1", "--wait=false"]],
        ["delete a node", ["delete", "node", "node-1", "--wait=false"]],
        [
          "create a pod",
          ["apply", "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "intruder", namespace: "default" },
            spec: { containers: [{ name: "c", image: "example.invalid/c:1" }] },
          }),
        ],
      ];
      for (const [what, args, stdin] of forbidden) {
        const r = await kube.kubectl(args, { kubeconfig, stdin });
        assert.notEqual(r.code, 0, `${what} must fail`);
        assert.match(r.stderr, /Forbidden|forbidden/, `${what}: ${r.stderr}`);
      }
      const secret = await kube.fetch("/api/v1/namespaces/default/secrets/elsewhere", {
        headers: auth,
      });
      assert.equal(secret.status, 403);
      assert.equal((await secret.json()).reason, "Forbidden");
      const secretWatch = await kube.fetch(
        `/api/v1/namespaces/${NAMESPACE}/secrets?watch=1&timeoutSeconds=1`,
        { headers: auth },
      );
      assert.equal(secretWatch.status, 403);
      await secretWatch.body?.cancel();
      const createPod = await kube.fetch("/api/v1/namespaces/default/pods", {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: "intruder" },
          spec: { containers: [{ name: "c", image: "example.invalid/c:1" }] },
        }),
      });
      assert.equal(createPod.status, 403);
      await createPod.body?.cancel();

      // Nothing changed behind the refusals.
      const state = JSON.parse(await kube.kubectlOk(["get", "nodeconfig", "node-1", "-o", "json"]));
      assert.equal(state.spec.mtu, 1450);
      const podNames = await kube.kubectlOk(["get", "pods", "-A", "-o", "name"]);
      // "web" and the agent's own pod, nothing else.
      assert.deepEqual(
        podNames.trim().split("\n").filter((n) => !n.startsWith("pod/flock-node-1-")),
        ["pod/web"],
      );
      assert.equal(
        (await kube.kubectlOk(["get", "node", "node-1", "-o", "name"])).trim(),
        "node/node-1",
      );
    });
  },
});
