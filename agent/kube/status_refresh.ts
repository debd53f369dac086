/**
 * When cluster mode recomputes the NodeConfig status with no event to prompt it. BGP sessions
 * change with no event to tell, so the status is looked at again now and then: every
 * {@link STATUS_REFRESH_MS} while every session is established, and soon while some is not,
 * because sessions come up seconds after a peer appears and `bgpSessionsUp` should say so
 * without waiting for the next 30 s round (what the 2 s refresh was made for). A session that
 * stays down (a peer that is gone, a wrong password) changes nothing for hours, yet each look
 * runs `birdc`: the delay then doubles from {@link STATUS_REFRESH_UNSETTLED_MS} up to
 * {@link STATUS_REFRESH_UNSETTLED_MAX_MS}, and starts over at 2 s whenever the sessions' counts
 * change (a new peer, one came up or went down). The cap keeps the purpose: a session that
 * comes up after a long while is in the status within 16 s (a 30 s cap would make it lag
 * longer than the settled round, and than what the e2e tests give it, 20 s).
 *
 * @module
 */

import { backoffMs } from "../backoff.ts";

/** How often the status is recomputed while every BGP session is established. */
export const STATUS_REFRESH_MS = 30_000;

/** The first delay while some BGP session is not established. */
export const STATUS_REFRESH_UNSETTLED_MS = 2_000;

/** The longest delay while some BGP session is not established. */
export const STATUS_REFRESH_UNSETTLED_MAX_MS = 16_000;

/** What one status computation found of the BGP sessions. */
export interface SessionCounts {
  sessions: number;
  sessionsUp: number;
}

/** The refresh delays; see the module doc. Times are in ms on any one clock. */
export class StatusRefreshSchedule {
  /** Looks in a row with the same unsettled counts (1 right after a change or when settled). */
  #unchangedLooks = 1;
  #counts = "";
  #due = 0;

  constructor(
    readonly minMs = STATUS_REFRESH_UNSETTLED_MS,
    readonly maxUnsettledMs = STATUS_REFRESH_UNSETTLED_MAX_MS,
    readonly settledMs = STATUS_REFRESH_MS,
  ) {}

  /** The status was computed at `now`; `routing` is undefined without BIRD (always settled). */
  computed(now: number, routing: SessionCounts | undefined): void {
    const counts = routing ? `${routing.sessionsUp}/${routing.sessions}` : "";
    const settled = !routing || routing.sessionsUp === routing.sessions;
    if (settled || counts !== this.#counts) this.#unchangedLooks = 1;
    else this.#unchangedLooks++;
    this.#counts = counts;
    this.#due = now + (settled ? this.settledMs : this.delayMs);
  }

  /** The delay that {@link computed} chose last (for logs and tests). */
  get delayMs(): number {
    return backoffMs(this.#unchangedLooks, this.minMs, this.maxUnsettledMs);
  }

  /** Whether a refresh is due at `now`. */
  due(now: number): boolean {
    return now >= this.#due;
  }
}
