/**
 * CHECK's comparison of a prevResult interface's `sandbox` with CNI_NETNS. The ADD result
 * reports CNI_NETNS as the runtime gave it, and a runtime gives CHECK the same path. A path in
 * another form may still name the same network namespace (`/var/run/netns/x` and `/run/netns/x`
 * through the /var/run symlink, a second bind mount, `/proc/<pid>/ns/net`), so when the strings
 * differ the two are compared by what identifies a netns: the nsfs device and inode both paths
 * resolve to (same_file.ts). Only a sandbox naming another namespace, or one that is gone, is a difference.
 *
 * @module
 */

import { sameIdentity, statIdentity } from "./same_file.ts";

/**
 * Why the pod interface's `sandbox` from prevResult is not the netns CHECK was called with, or
 * undefined when it is (the same path, or another path to the same namespace).
 */
export function sandboxMismatch(
  ifname: string,
  sandbox: string,
  netns: string,
): string | undefined {
  if (sandbox === netns) return undefined;
  const was = statIdentity(sandbox);
  if (sameIdentity(was, statIdentity(netns))) return undefined;
  return `prevResult puts interface ${ifname} in sandbox ${sandbox}` +
    (was ? ", another network namespace than" : ", which does not exist, not in") +
    ` CNI_NETNS ${netns}`;
}
