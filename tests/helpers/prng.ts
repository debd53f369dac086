/**
 * Seeded randomness for storm and fuzz tests: every random choice comes from one printed seed,
 * so a failure is replayed with `FLOCK_TEST_SEED=<seed>`.
 *
 * @module
 */

/** A source of uniform numbers in [0, 1) with a few conveniences. */
export class Prng {
  #state: number;

  /** @param seed any 32-bit integer */
  constructor(readonly seed: number) {
    this.#state = seed | 0;
  }

  /**
   * A generator seeded from `FLOCK_TEST_SEED` when set, else from the clock; logs the seed
   * under `label` so the run can be replayed.
   */
  static fromEnv(label: string): Prng {
    const text = Deno.env.get("FLOCK_TEST_SEED");
    const seed = text && /^\d+$/.test(text)
      ? Number(text) >>> 0
      : (Date.now() ^ (performance.now() * 1000)) >>> 0;
    console.log(`${label}: seed ${seed} (replay with FLOCK_TEST_SEED=${seed})`);
    return new Prng(seed);
  }

  /** The next number in [0, 1) (mulberry32). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) | 0;
    let t = Math.imul(this.#state ^ (this.#state >>> 15), 1 | this.#state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }

  /** A string of up to `max` characters, biased towards JSON syntax and awkward code points. */
  string(max: number): string {
    const alphabet = '{}[]":,0123456789abcdefnulltrue \n\t\\/.-_=;\0é😀\u2028';
    const chars = [...alphabet];
    let s = "";
    const n = this.int(max + 1);
    for (let i = 0; i < n; i++) {
      s += this.chance(0.9) ? this.pick(chars) : String.fromCharCode(this.int(0x10000));
    }
    return s;
  }

  /**
   * An arbitrary JSON value nested up to `depth` levels. With a `vocabulary`, half of the
   * strings and object keys are words from it, so the value gets past a parser's first checks
   * (field names, command names) more often.
   */
  json(depth: number, vocabulary: readonly string[] = []): unknown {
    const text = (max: number) =>
      vocabulary.length > 0 && this.chance(0.5) ? this.pick(vocabulary) : this.string(max);
    switch (this.int(depth > 0 ? 8 : 6)) {
      case 0:
        return null;
      case 1:
        return this.chance(0.5);
      case 2:
        return this.pick([0, -1, 1.5, 1e308, -0, 2 ** 53 + 1, this.int(1_000_000)]);
      case 3:
      case 4:
        return text(24);
      case 5:
        return "";
      case 6:
        return Array.from({ length: this.int(4) }, () => this.json(depth - 1, vocabulary));
      default: {
        const o: Record<string, unknown> = {};
        for (let i = this.int(4); i > 0; i--) o[text(8)] = this.json(depth - 1, vocabulary);
        return o;
      }
    }
  }
}
