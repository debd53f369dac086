/**
 * `flock agent` without `--config`: connects to the API server and builds the
 * {@link ClusterMode} that feeds the agent. Imported lazily by agent_main.ts, so standalone
 * mode never loads the Kubernetes client.
 *
 * @module
 */

import { KubeApi } from "./api.ts";
import { ClusterMode, DEFAULT_CONFIG_WAIT_MS } from "./cluster.ts";
import { DEFAULT_DELETED_PEER_GRACE_MS, MAX_DELETED_PEER_GRACE_MS } from "./kept_peers.ts";
import type { NodeConfig } from "../config.ts";

/** Options of {@link openClusterMode}. */
export interface OpenClusterOptions {
  nodeName: string;
  /** A kubeconfig file; without it the in-cluster service account. */
  kubeconfig?: string;
  /** `--nodeconfig-wait-ms`, as given. */
  waitForConfigMs?: string;
  onPeersChanged?: (peers: NodeConfig[]) => void;
  log: (fields: Record<string, unknown>) => void;
}

/** A usage error of cluster mode (bad flag, no credentials); exit code 2. */
export class ClusterUsageError extends Error {
  override name = "ClusterUsageError";
}

/** The environment variable that sets how long a deleted mesh peer is kept (milliseconds). */
export const DELETED_PEER_GRACE_ENV = "FLOCK_DELETED_PEER_GRACE_MS";

/** The grace of a mesh peer whose Node or NodeConfig was deleted, from the environment. */
export function deletedPeerGraceMs(text: string | undefined): number {
  if (text === undefined || text === "") return DEFAULT_DELETED_PEER_GRACE_MS;
  const ms = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(ms <= MAX_DELETED_PEER_GRACE_MS)) {
    throw new ClusterUsageError(
      `${DELETED_PEER_GRACE_ENV} must be a whole number of milliseconds up to ` +
        `${MAX_DELETED_PEER_GRACE_MS}, got "${text}"`,
    );
  }
  return ms;
}

/**
 * Reads the credentials and returns the (not yet started) cluster side of the agent. Its
 * namespace (where the BGP password Secrets are) is `POD_NAMESPACE` (the DaemonSet sets it from
 * the downward API), else the service account's, else the kubeconfig context's.
 */
export function openClusterMode(opts: OpenClusterOptions): ClusterMode {
  const wait = opts.waitForConfigMs;
  if (wait !== undefined && !/^\d+$/.test(wait)) {
    throw new ClusterUsageError(
      `--nodeconfig-wait-ms must be a whole number of milliseconds, got "${wait}"`,
    );
  }
  const grace = deletedPeerGraceMs(Deno.env.get(DELETED_PEER_GRACE_ENV));
  if (!opts.kubeconfig && !Deno.env.get("KUBERNETES_SERVICE_HOST")) {
    throw new ClusterUsageError(
      "no --config FILE (standalone mode), no --kubeconfig FILE, and not running in a pod " +
        "(KUBERNETES_SERVICE_HOST is unset)",
    );
  }
  let api: KubeApi;
  try {
    api = new KubeApi({ kubeconfig: opts.kubeconfig });
  } catch (e) {
    throw new ClusterUsageError(`cannot load Kubernetes credentials: ${(e as Error).message}`);
  }
  const namespace = Deno.env.get("POD_NAMESPACE") || api.contextNamespace;
  opts.log({ msg: "cluster mode", server: api.server, node: opts.nodeName, namespace });
  return new ClusterMode({
    nodeName: opts.nodeName,
    api,
    namespace,
    waitForConfigMs: wait === undefined ? DEFAULT_CONFIG_WAIT_MS : Number(wait),
    onPeersChanged: opts.onPeersChanged,
    deletedPeerGraceMs: grace,
    log: opts.log,
  });
}
