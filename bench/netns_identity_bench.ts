/**
 * What ADD's "one flock interface per netns" check costs for a new pod in its own netns (the
 * common case): the netns's identity (a stat of the fd the datapath already holds) looked up
 * among 1,000 records' (agent/netns_identity.ts), against the kernel's check it replaces there
 * (a link dump of the pod's netns, which a new pod's holds only `lo`). Interleaved round by round
 * so that machine noise hits both alike.
 *
 * In throwaway namespaces (`flk-nib-<pid>-*`, deleted at the end, also on failure). Run as root:
 * `deno run -A --no-lock bench/netns_identity_bench.ts [--calls 2000]`
 *
 * @module
 */

import { Handle, listLinks } from "../netlink/mod.ts";
import { NetnsIdentities, netnsIdentityOfFd } from "../agent/netns_identity.ts";
import {
  addNamespaces,
  deleteNamespaces,
  formatTable,
  interleavedMedianUs,
  perCallUs,
  ratio,
  type ResultRow,
  summarize,
  us,
} from "./report.ts";
import { integerArgs } from "./args.ts";

const ROUNDS = 7;
const RECORDS = 1_000;
const COLD_CALLS = 60;
const COLD_PAUSE_MS = 20;

/** Runs the benchmark; returns the table rows. */
export async function runNetnsIdentityBench(calls: number): Promise<ResultRow[]> {
  const pod = `flk-nib-${Deno.pid}-pod`;
  await addNamespaces([pod]);
  try {
    const podNs = Handle.forNetns(`/run/netns/${pod}`);
    try {
      const identities = new NetnsIdentities();
      // Other pods' netns: identities of the same device, other inodes.
      const [major, minor] = netnsIdentityOfFd(podNs.netnsFd).split(":");
      for (let i = 0; i < RECORDS; i++) {
        identities.add(`pod${i}\u0000eth0`, `${major}:${minor}:${1e9 + i}`);
      }
      const inStore = () => true;
      const byIdentity = () => {
        const identity = netnsIdentityOfFd(podNs.netnsFd);
        if (identities.mayHoldOther(identity, "new\u0000eth0", inStore)) throw new Error("hit");
        identities.add("new\u0000eth0", identity);
        identities.forget("new\u0000eth0");
      };
      const byDump = () => {
        let veths = 0;
        for (const link of listLinks(podNs)) if (link.kind === "veth" && link.peerIndex) veths++;
        if (veths !== 0) throw new Error("a veth in a new pod's netns");
      };
      const [a, b] = interleavedMedianUs(ROUNDS, calls, byIdentity, byDump);
      // As in the agent: one call now and then (caches cold), not a loop.
      const coldIdentity: number[] = [];
      const coldDump: number[] = [];
      for (let i = 0; i < COLD_CALLS; i++) {
        await new Promise((r) => setTimeout(r, COLD_PAUSE_MS));
        coldIdentity.push(perCallUs(1, byIdentity));
        await new Promise((r) => setTimeout(r, COLD_PAUSE_MS));
        coldDump.push(perCallUs(1, byDump));
      }
      const c = summarize(coldIdentity).median;
      const d = summarize(coldDump).median;
      return [
        {
          what: `netns identity among ${RECORDS} records' (median of ${ROUNDS}×${calls})`,
          figure: us(a),
        },
        { what: "link dump of the new pod's netns (the kernel's check)", figure: us(b) },
        { what: "identity / dump", figure: ratio(a / b) },
        {
          what: `one call after ${COLD_PAUSE_MS} ms idle (median of ${COLD_CALLS}): identity`,
          figure: us(c),
        },
        { what: "one call after idle: link dump", figure: us(d) },
        { what: "identity / dump, one call after idle", figure: ratio(c / d) },
      ];
    } finally {
      podNs.close();
    }
  } finally {
    await deleteNamespaces([pod]);
  }
}

if (import.meta.main) {
  const { calls } = integerArgs({ calls: { default: 2000, min: 1 } });
  console.log(
    formatTable(
      "netns check of a new pod's ADD",
      await runNetnsIdentityBench(calls),
    ),
  );
}
