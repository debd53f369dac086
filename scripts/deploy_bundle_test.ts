import assert from "node:assert/strict";
import { BUNDLE_PATH, DEPLOY_PARTS, renderBundle } from "./deploy_bundle.ts";

Deno.test("deploy/flock.yaml is up to date with its parts (run scripts/deploy_bundle.ts)", async () => {
  const bundle = await Deno.readTextFile(BUNDLE_PATH);
  assert.equal(bundle, await renderBundle());
  for (const part of DEPLOY_PARTS) assert.ok(bundle.includes(`# --- from deploy/${part}\n`), part);
  // One object per document: the CRD, the ServiceAccount, ClusterRole and binding, the
  // namespaced Role and binding (BGP password Secrets), the node policy and its binding, the
  // ConfigMap, the DaemonSet.
  const kinds = [...bundle.matchAll(/^kind: (\w+)$/gm)].map((m) => m[1]);
  assert.deepEqual(kinds, [
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ConfigMap",
    "DaemonSet",
  ]);
});
