import assert from "node:assert/strict";
import {
  STATUS_REFRESH_MS,
  STATUS_REFRESH_UNSETTLED_MAX_MS,
  STATUS_REFRESH_UNSETTLED_MS,
  StatusRefreshSchedule,
} from "./status_refresh.ts";

/** Runs the schedule as cluster mode does: a compute whenever it is due; returns the times. */
function refreshTimes(
  schedule: StatusRefreshSchedule,
  untilMs: number,
  counts: (t: number) => { sessions: number; sessionsUp: number } | undefined,
): number[] {
  const times: number[] = [];
  for (let t = 0; t <= untilMs; t += 1_000) {
    if (!schedule.due(t)) continue;
    times.push(t);
    schedule.computed(t, counts(t));
  }
  return times;
}

Deno.test("status refresh: a session that stays down is looked at 2, 4, 8, 16 s apart, then every 16 s", () => {
  const times = refreshTimes(new StatusRefreshSchedule(), 120_000, () => ({
    sessions: 2,
    sessionsUp: 1,
  }));
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  assert.deepEqual(gaps.slice(0, 5), [2_000, 4_000, 8_000, 16_000, 16_000]);
  assert.ok(gaps.every((g) => g <= STATUS_REFRESH_UNSETTLED_MAX_MS));
  // Before: one every 2 s, 60 in these two minutes.
  assert.ok(times.length <= 10, `${times.length} refreshes in 2 minutes`);
});

Deno.test("status refresh: a change in the session counts starts over at 2 s", () => {
  const schedule = new StatusRefreshSchedule();
  const times = refreshTimes(schedule, 60_000, (t) => ({
    sessions: t < 30_000 ? 1 : 2,
    sessionsUp: 0,
  }));
  const after = times.filter((t) => t >= 30_000);
  // The first look after the new peer appeared backs off from 2 s again.
  assert.equal(after[1] - after[0], STATUS_REFRESH_UNSETTLED_MS);
});

Deno.test("status refresh: all sessions established (or no BIRD) is every 30 s; the lag of a session that came up is at most 16 s", () => {
  const settled = refreshTimes(new StatusRefreshSchedule(), 100_000, () => undefined);
  assert.deepEqual(settled, [0, STATUS_REFRESH_MS, 2 * STATUS_REFRESH_MS, 3 * STATUS_REFRESH_MS]);
  const upAt = 47_000;
  const times = refreshTimes(new StatusRefreshSchedule(), 120_000, (t) => ({
    sessions: 1,
    sessionsUp: t >= upAt ? 1 : 0,
  }));
  const seen = times.find((t) => t >= upAt)!;
  assert.ok(seen - upAt <= STATUS_REFRESH_UNSETTLED_MAX_MS, `seen ${seen - upAt} ms late`);
  const afterUp = times.filter((t) => t > seen);
  assert.equal(afterUp[0] - seen, STATUS_REFRESH_MS);
});
