/**
 * Node-bound ServiceAccount tokens on the test API server, as the kubelet gets them for a pod's
 * projected token: a TokenRequest whose `boundObjectRef` is a Pod with `spec.nodeName`. The API
 * server then records the pod's node in the token, and every request made with it carries
 * `authentication.kubernetes.io/node-name` in the user's extra (what deploy/node-policy.yaml
 * checks).
 *
 * @module
 */

import type { KubeCluster } from "./kube.ts";

/** The user-info extra key the API server fills from a pod-bound token's node. */
export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";

/**
 * Makes sure Node `node` exists and a Pod of ServiceAccount `namespace/serviceAccount` sits on
 * it (no kubelet runs, so it stays Pending), then mints a token bound to that Pod. Returns the
 * token. Each call makes a pod of its own, named after the node.
 */
export async function nodeBoundToken(
  kube: KubeCluster,
  namespace: string,
  serviceAccount: string,
  node: string,
): Promise<string> {
  // Idempotent: a second token for the same node reuses the Node.
  await kube.apply({ apiVersion: "v1", kind: "Node", metadata: { name: node } });
  const pod = JSON.parse(
    await kube.kubectlOk(["create", "-f", "-", "-o", "json"], {
      stdin: JSON.stringify({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { generateName: `${serviceAccount}-${node}-`, namespace },
        spec: {
          nodeName: node,
          serviceAccountName: serviceAccount,
          containers: [{ name: "agent", image: "example.invalid/flock:1" }],
        },
      }),
    }),
  );
  const out = await kube.kubectlOk([
    "create",
    "token",
    serviceAccount,
    `--namespace=${namespace}`,
    "--bound-object-kind=Pod",
    `--bound-object-name=${pod.metadata.name}`,
    `--bound-object-uid=${pod.metadata.uid}`,
    "--duration=3600s",
  ]);
  return out.trim();
}
