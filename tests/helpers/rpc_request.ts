/**
 * The agent's RPC request for one CNI verb, as the plugin would send it, for tests and benchmarks
 * that drive a PodHandler directly (no plugin, no socket).
 *
 * @module
 */

import type { RpcRequest } from "../../agent/protocol.ts";

/**
 * A request for `command` of the container `containerId` (interface `eth0`) in `netns`, on the
 * CNI network `network`; `config` keys are added to the network config.
 */
export function rpcRequest(
  command: RpcRequest["command"],
  containerId: string,
  netns: string,
  network: string,
  config: Record<string, unknown> = {},
): RpcRequest {
  return {
    command,
    containerId,
    netns,
    ifname: "eth0",
    args: "",
    config: { cniVersion: "1.1.0", name: network, type: "flock", ...config },
  };
}
