/**
 * What a release's ownership check costs (agent/datapath.ts: before a DEL takes a host veth down
 * and deletes it, is its other end in the record's netns?). Two ways of asking the kernel:
 * the netns id of the record's netns path (RTM_GETNSID, compared with the veth's
 * IFLA_LINK_NETNSID: one open and one request on the node's socket), which the datapath uses, and
 * opening a netlink socket inside the pod's netns to look its end up (what it would cost
 * otherwise). Interleaved round by round so that machine noise hits both alike.
 *
 * In throwaway namespaces (a node and a pod, `flk-vob-<pid>-*`, deleted at the end, also on
 * failure). Run as root: `deno run -A --no-lock bench/veth_owner_bench.ts [--calls 2000]`
 *
 * @module
 */

import { getLinkByIndex, getLinkByName, Handle, type Link, netnsIdOf } from "../netlink/mod.ts";
import { runOk } from "../tests/helpers/exec.ts";
import {
  addNamespaces,
  deleteNamespaces,
  formatTable,
  interleavedMedianUs,
  ratio,
  type ResultRow,
  us,
} from "./report.ts";
import { integerArgs } from "./args.ts";

const ROUNDS = 7;

/** Runs the benchmark; returns the table rows. */
export async function runVethOwnerBench(calls: number): Promise<ResultRow[]> {
  const node = `flk-vob-${Deno.pid}-node`;
  const pod = `flk-vob-${Deno.pid}-pod`;
  await addNamespaces([node, pod]);
  try {
    await runOk([
      "ip",
      "-n",
      node,
      "link",
      "add",
      "flockb0b0b0b0",
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      pod,
    ]);
    const h = Handle.forNetns(`/run/netns/${node}`);
    try {
      const host: Link = getLinkByName(h, "flockb0b0b0b0")!;
      const podPath = `/run/netns/${pod}`;
      const byNsid = () => {
        if (netnsIdOf(h, podPath) !== host.peerNetnsId) throw new Error("nsid differs");
      };
      const byPodSocket = () => {
        const ns = Handle.forNetns(podPath);
        try {
          if (getLinkByIndex(ns, host.peerIndex!)?.peerIndex !== host.index) {
            throw new Error("not paired");
          }
        } finally {
          ns.close();
        }
      };
      const [a, b] = interleavedMedianUs(ROUNDS, calls, byNsid, byPodSocket);
      return [
        {
          what: `netns id of the record's netns vs the veth's (median of ${ROUNDS}×${calls})`,
          figure: us(a),
        },
        { what: "socket in the pod's netns, its end looked up", figure: us(b) },
        { what: "netns id / pod socket", figure: ratio(a / b) },
      ];
    } finally {
      h.close();
    }
  } finally {
    await deleteNamespaces([node, pod]);
  }
}

if (import.meta.main) {
  const { calls } = integerArgs({ calls: { default: 2000, min: 1 } });
  console.log(formatTable("veth ownership check", await runVethOwnerBench(calls)));
}
