/**
 * What unit tests of `flock status` and `/metrics` build a snapshot from without an agent: a
 * ready node with no hooks, and the reading of one sample of a scrape.
 *
 * @module
 */

import type { StatusSources } from "../../agent/status_snapshot.ts";

/** A ready node "node-a" with no hooks, its clock fixed at 1 000 ms; spread and override. */
export const BASE_STATUS_SOURCES: StatusSources = {
  nodeName: "node-a",
  version: "0.1.0",
  startedAt: 0,
  ready: true,
  hooks: {},
  now: () => 1_000,
};

/** The value of one sample line of a scrape (`name` or `name{labels}`), or undefined when absent. */
export function scrapeSample(scrape: string, series: string): number | undefined {
  const line = scrape.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
