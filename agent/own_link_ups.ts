/**
 * The link ups the agent made itself, as tokens a link watch consumes (agent/host_side_repair.ts):
 * every ADD sets its new host veth up, and the notification of that up is no operator's flap,
 * so it needs no repair check. One token per own up, one consumed per up notification of that
 * link: the kernel queues notifications in the order of the changes, so an own up's
 * notification comes before that of any later flap, and a flap right after an ADD is still seen.
 *
 * Errors lean one way only: a token too few costs one needless check (cheap), a token too many
 * would hide a flap. So a token is added only once the up was asked for and answered, and all
 * are dropped when notifications were lost; the bound drops the oldest. An up asked for may
 * change nothing (something else set the link up first) and tell nothing: its token expires
 * after {@link OWN_UP_POLLS} complete reads (the kernel queues an up's notification before it
 * answers the request, so the first read after the answer holds it).
 *
 * @module
 */

/** How many links may hold tokens at once: far more than come up between two polls. */
const OWN_LINK_UPS_MAX = 4096;

/** How many complete reads of the notifications a token outlives unconsumed: none needs more. */
const OWN_UP_POLLS = 2;

/** Tokens of own link ups, by interface index; bounded. */
export class OwnLinkUps {
  /**
   * Tokens by interface index, with the read count when the newest was added; insertion order
   * is age (the oldest is dropped first).
   */
  readonly #tokens = new Map<number, { held: number; at: number }>();
  /** Complete reads of the notifications so far ({@link polled}). */
  #polls = 0;

  constructor(readonly max = OWN_LINK_UPS_MAX) {}

  /** Notes one own up of the link `index`. */
  add(index: number): void {
    const held = this.#tokens.get(index)?.held ?? 0;
    this.#tokens.delete(index);
    this.#tokens.set(index, { held: held + 1, at: this.#polls });
    if (this.#tokens.size > this.max) {
      this.#tokens.delete(this.#tokens.keys().next().value!);
    }
  }

  /**
   * Consumes the tokens of `times` up notifications of the link `index`; returns how many of
   * those ups were someone else's (0: all were own).
   */
  consume(index: number, times: number): number {
    const token = this.#tokens.get(index);
    const held = token?.held ?? 0;
    const own = Math.min(held, times);
    if (held - own > 0) token!.held = held - own;
    else this.#tokens.delete(index);
    return times - own;
  }

  /**
   * Notes one complete read of the notifications (after its ups were consumed): tokens that
   * outlived {@link OWN_UP_POLLS} of them stood for ups that told nothing, and are dropped.
   */
  polled(): void {
    this.#polls++;
    for (const [index, token] of this.#tokens) {
      if (this.#polls - token.at >= OWN_UP_POLLS) this.#tokens.delete(index);
    }
  }

  /** Drops every token (notifications were lost: which ups they stood for is unknown). */
  clear(): void {
    this.#tokens.clear();
  }

  /** The number of links holding tokens. */
  get size(): number {
    return this.#tokens.size;
  }
}
