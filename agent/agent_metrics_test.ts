/** AgentMetrics' counters read from other components at scrape time, without an agent. */

import assert from "node:assert/strict";
import { AgentMetrics, type AnycastSyncCounter } from "./agent_metrics.ts";
import { buildStatusSnapshot } from "./status_snapshot.ts";
import { BASE_STATUS_SOURCES, scrapeSample as sample } from "../tests/helpers/status_sources.ts";

Deno.test(
  "metrics: flock_anycast_sync_failures_total counts the anycast routes' failed syncs, " +
    "never going down when a reconfigure replaces them",
  async () => {
    let anycast: AnycastSyncCounter | undefined;
    const metrics = new AgentMetrics(
      () => buildStatusSnapshot(BASE_STATUS_SOURCES),
      0,
      "0.1.0",
      { anycast: () => anycast },
    );
    const scrape = async () => sample(await metrics.encode(), "flock_anycast_sync_failures_total");
    const body = await metrics.encode();
    assert.match(body, /^# TYPE flock_anycast_sync_failures_total counter$/m);
    assert.equal(await scrape(), 0, "before any anycast routes");
    const first = { syncFailures: 2 };
    anycast = first;
    assert.equal(await scrape(), 2);
    first.syncFailures = 5;
    assert.equal(await scrape(), 5);
    // A reconfigure: new routes counting from 0; the old ones' last failures still count.
    first.syncFailures = 6;
    anycast = { syncFailures: 1 };
    assert.equal(await scrape(), 7);
    assert.equal(await scrape(), 7, "nothing new");
  },
);
