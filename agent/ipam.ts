/**
 * Node-local IP address management: one {@link AddressPool} per address family over the node's
 * CIDR.
 *
 * Addresses are tracked sparsely (a `Set` of the ones in use and an insertion-ordered `Map` of
 * the ones cooling down after a release), so a /64 costs no more than a /24 and an allocation
 * does not get slower as the pool fills: every algorithm starts from a cursor, a hint or a
 * hash and probes forward from there.
 */

import {
  AF_INET,
  bigIntToIP,
  familyBits,
  familyName,
  formatIP,
  formatPrefix,
  type IP,
  ipToBigInt,
  networkOf,
  type Prefix,
  prefixContains,
  prefixCovers,
  prefixSize,
} from "../netlink/ip.ts";
import { CniCode, CniError } from "./protocol.ts";
import { fnv1a64 } from "./fnv.ts";

/** How a free address is picked; the `flock.fritzlab.net/ip-algo` annotation. */
export type AlgoName = "next" | "lowest" | "random" | "hash";

/** All algorithm names, in the order they are documented. */
export const ALGO_NAMES: readonly AlgoName[] = ["next", "lowest", "random", "hash"];

/** CNI error code (plugin-specific range) for "no free address in the range". */
export const NO_FREE_ADDRESS = 100;

/** Default time a released address is kept out of circulation. */
export const DEFAULT_COOLDOWN_MS = 30_000;

/**
 * Upper bound of the linear probes one allocation makes. Ranges up to this size are searched
 * completely, so their exhaustion is exact; larger ranges cannot realistically fill up.
 */
const MAX_LINEAR_PROBES = 65_536;

/** Extra random probes in a large range after the linear probes found nothing. */
const MAX_RANDOM_PROBES = 64;

/** Raised when a range has no address left to hand out (not even a cooling one). */
export class PoolExhaustedError extends CniError {
  constructor(readonly range: Prefix, msg: string) {
    super(NO_FREE_ADDRESS, msg);
    this.name = "PoolExhaustedError";
  }
}

/** Raised when an address asked for explicitly is already taken. */
export class AddressInUseError extends CniError {
  constructor(readonly ip: IP) {
    super(CniCode.invalidConfig, `address ${formatIP(ip)} is already in use`);
    this.name = "AddressInUseError";
  }
}

/**
 * Why `ip` can never be handed out from the node CIDR `cidr`, or `undefined` when it can.
 *
 * The network address is skipped (for IPv6 it is the subnet-router anycast address), and for
 * IPv4 the broadcast address too. Point-to-point sized prefixes (/31, /32, /127, /128) have no
 * such addresses (RFC 3021, RFC 6164).
 */
export function unusableReason(cidr: Prefix, ip: IP): string | undefined {
  if (!prefixContains(cidr, ip)) return `${formatIP(ip)} is outside ${formatPrefix(cidr)}`;
  const [first, last] = reservedBounds(cidr);
  const v = ipToBigInt(ip);
  if (first !== undefined && v === first) {
    return ip.family === AF_INET
      ? `${formatIP(ip)} is the network address of ${formatPrefix(cidr)}`
      : `${formatIP(ip)} is the subnet-router anycast address of ${formatPrefix(cidr)}`;
  }
  if (last !== undefined && v === last) {
    return `${formatIP(ip)} is the broadcast address of ${formatPrefix(cidr)}`;
  }
  return undefined;
}

/** The reserved first and last address of a node CIDR, as integers (or `undefined`). */
function reservedBounds(cidr: Prefix): [bigint | undefined, bigint | undefined] {
  const hostBits = familyBits(cidr.ip.family) - cidr.len;
  if (hostBits < 2) return [undefined, undefined];
  const base = ipToBigInt(networkOf(cidr));
  const last = base + prefixSize(cidr) - 1n;
  return [base, cidr.ip.family === AF_INET ? last : undefined];
}

/** Options of an {@link AddressPool}. */
export interface AddressPoolOptions {
  /** How long a released address stays out of circulation (default 30 s). */
  cooldownMs?: number;
  /** Clock in milliseconds; injectable for tests. */
  now?: () => number;
  /** Source of uniform numbers in [0, 1); injectable for tests. */
  random?: () => number;
}

/** One allocation request. */
export interface AllocateRequest {
  algo: AlgoName;
  /** A sub-range of the pool's CIDR to allocate from (default: the whole CIDR). */
  range?: Prefix;
  /** Stable identity ("namespace/name") that `hash` maps to an address. */
  key?: string;
}

/** An inclusive range of integers with its prefix, as the probing loops want it. */
interface Span {
  prefix: Prefix;
  lo: bigint;
  hi: bigint;
  size: bigint;
  id: string;
}

/**
 * The addresses of one family on this node.
 *
 * Not persistent: the agent reserves the addresses of committed attachments at start.
 */
export class AddressPool {
  /** The node CIDR this pool hands addresses out of. */
  readonly cidr: Prefix;
  readonly #whole: Span;
  readonly #reservedFirst: bigint | undefined;
  readonly #reservedLast: bigint | undefined;
  readonly #cooldownMs: number;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #used = new Set<bigint>();
  /** Released address → release time; kept in release order. */
  readonly #cooling = new Map<bigint, number>();
  /** Cooling addresses taken before their time (pinned, or the last resort) → release time. */
  readonly #cutShort = new Map<bigint, number>();
  /** Latest release time seen, to notice a backdated release arriving out of order. */
  #newestRelease = -Infinity;
  /** Per-range position of the last `next` allocation. */
  readonly #cursors = new Map<string, bigint>();
  /** Per-range state of `lowest`. */
  readonly #lowest = new Map<string, LowestState>();
  /** The latest `next` allocation and the cursor before it, for {@link giveBack}. */
  #lastNext?: { spanId: string; v: bigint; previous: bigint | undefined };

  constructor(cidr: Prefix, opts: AddressPoolOptions = {}) {
    this.cidr = { ip: networkOf(cidr), len: cidr.len };
    this.#whole = span(this.cidr);
    [this.#reservedFirst, this.#reservedLast] = reservedBounds(this.cidr);
    this.#cooldownMs = opts.cooldownMs ?? DEFAULT_COOLDOWN_MS;
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? Math.random;
  }

  /** Number of addresses in use. */
  get allocated(): number {
    return this.#used.size;
  }

  /** Number of addresses that can ever be handed out (without network/broadcast). */
  get capacity(): bigint {
    return this.#usableIn(this.#whole);
  }

  /** Number of released addresses still cooling down. */
  get cooling(): number {
    this.#expire();
    return this.#cooling.size;
  }

  /** Whether `ip` is currently in use. */
  isAllocated(ip: IP): boolean {
    return ip.family === this.cidr.ip.family && this.#used.has(ipToBigInt(ip));
  }

  /**
   * Picks a free address with `algo`, marks it in use and returns it.
   *
   * Addresses in cooldown are skipped; when nothing else is left the one released longest ago
   * is reused. Throws {@link PoolExhaustedError} when the range is full.
   */
  allocate(req: AllocateRequest): IP {
    const s = req.range ? this.#subSpan(req.range) : this.#whole;
    this.#expire();
    let v: bigint | undefined;
    switch (req.algo) {
      case "next":
        v = this.#allocateNext(s);
        break;
      case "lowest":
        v = this.#allocateLowest(s);
        break;
      case "random":
        v = this.#allocateRandom(s);
        break;
      case "hash":
        v = req.key ? this.#allocateHash(s, req.key) : this.#allocateNext(s);
        break;
      default:
        throw new CniError(CniCode.invalidConfig, `unknown IP allocation algorithm ${req.algo}`);
    }
    v ??= this.#oldestCoolingIn(s);
    if (v === undefined) throw this.#exhausted(s);
    this.#take(v);
    return bigIntToIP(this.cidr.ip.family, v);
  }

  /**
   * Marks `ip` in use: a pinned address, or one restored from the node's records. Overrides a
   * cooldown. Throws {@link AddressInUseError} if it is already in use.
   */
  reserve(ip: IP): void {
    const why = unusableReason(this.cidr, ip);
    if (why) throw new CniError(CniCode.invalidConfig, `cannot reserve: ${why}`);
    const v = ipToBigInt(ip);
    if (this.#used.has(v)) throw new AddressInUseError(ip);
    this.#take(v);
  }

  /**
   * Returns `ip` to the pool after a cooldown; unknown addresses are ignored. `releasedAt`
   * (same clock as `now`) backdates the release, for releases restored after a restart.
   */
  release(ip: IP, releasedAt?: number): void {
    if (ip.family !== this.cidr.ip.family) return;
    const v = ipToBigInt(ip);
    if (!this.#used.delete(v)) return;
    this.#cutShort.delete(v);
    this.#startCooling(v, releasedAt ?? this.#now(), releasedAt !== undefined);
  }

  /** Puts `v` into the release-ordered cooling map; `backdated` ones may land out of order. */
  #startCooling(v: bigint, at: number, backdated: boolean): void {
    this.#cooling.delete(v);
    this.#cooling.set(v, at);
    if (backdated && at < this.#newestRelease) {
      // Keep the map in release order (only releases restored at start and give-backs of a
      // cut-short cooldown get here).
      const sorted = [...this.#cooling].sort((x, y) => x[1] - y[1]);
      this.#cooling.clear();
      for (const [k, t] of sorted) this.#cooling.set(k, t);
    }
    if (at > this.#newestRelease) this.#newestRelease = at;
  }

  /**
   * Undoes an allocation or reservation that never reached a pod (a failed ADD rolling back):
   * the address is free at once, without a cooldown, and if it was the latest `next` allocation
   * the cursor steps back, so a failed ADD leaves no trace. Unknown addresses are ignored.
   */
  giveBack(ip: IP): void {
    if (ip.family !== this.cidr.ip.family) return;
    const v = ipToBigInt(ip);
    if (!this.#used.delete(v)) return;
    const last = this.#lastNext;
    if (last?.v === v && this.#cursors.get(last.spanId) === v) {
      if (last.previous === undefined) this.#cursors.delete(last.spanId);
      else this.#cursors.set(last.spanId, last.previous);
    }
    this.#lastNext = undefined;
    // An address whose cooldown the failed ADD cut short cools on: it was another pod's.
    const releasedAt = this.#cutShort.get(v);
    this.#cutShort.delete(v);
    if (releasedAt !== undefined && this.#now() - releasedAt < this.#cooldownMs) {
      this.#startCooling(v, releasedAt, true);
      return;
    }
    this.#cooled(v); // free again: below a `lowest` frontier it goes back on the heap
  }

  #take(v: bigint): void {
    this.#used.add(v);
    const releasedAt = this.#cooling.get(v);
    if (releasedAt === undefined) return;
    this.#cooling.delete(v);
    this.#cutShort.set(v, releasedAt);
  }

  /** Drops expired cooldowns from the front of the release-ordered map. */
  #expire(): void {
    const now = this.#now();
    for (const [v, at] of this.#cooling) {
      if (now - at < this.#cooldownMs) break;
      this.#cooled(v);
    }
  }

  /** Ends the cooldown of `v`: it is free again, possibly below a `lowest` frontier. */
  #cooled(v: bigint): void {
    this.#cooling.delete(v);
    for (const st of this.#lowest.values()) {
      if (v < st.span.lo || v >= st.frontier) continue;
      st.freed.push(v);
      // Other algorithms may take these back; drop such stale entries before they pile up.
      if (st.freed.size > 2 * st.compactedSize + 1024) {
        st.freed.retain((x) => this.#isFree(x));
        st.compactedSize = st.freed.size;
      }
    }
  }

  #isReserved(v: bigint): boolean {
    return v === this.#reservedFirst || v === this.#reservedLast;
  }

  #isCooling(v: bigint): boolean {
    const at = this.#cooling.get(v);
    if (at === undefined) return false;
    if (this.#now() - at < this.#cooldownMs) return true;
    this.#cooled(v);
    return false;
  }

  #isFree(v: bigint): boolean {
    return !this.#isReserved(v) && !this.#used.has(v) && !this.#isCooling(v);
  }

  /** First free address scanning forward from `start`, wrapping inside the span. */
  #probeForward(s: Span, start: bigint): bigint | undefined {
    const limit = s.size < BigInt(MAX_LINEAR_PROBES) ? Number(s.size) : MAX_LINEAR_PROBES;
    let v = start;
    for (let i = 0; i < limit; i++) {
      if (this.#isFree(v)) return v;
      v = v === s.hi ? s.lo : v + 1n;
    }
    if (s.size <= BigInt(MAX_LINEAR_PROBES)) return undefined;
    // A huge range with a long busy run here: jump elsewhere before giving up.
    for (let i = 0; i < MAX_RANDOM_PROBES; i++) {
      const r = s.lo + this.#randomBelow(s.size);
      if (this.#isFree(r)) return r;
    }
    return undefined;
  }

  #allocateNext(s: Span): bigint | undefined {
    const cursor = this.#cursors.get(s.id);
    const start = cursor === undefined || cursor >= s.hi ? s.lo : cursor + 1n;
    const v = this.#probeForward(s, start);
    if (v !== undefined) {
      this.#lastNext = { spanId: s.id, v, previous: cursor };
      this.#cursors.set(s.id, v);
    }
    return v;
  }

  /**
   * Lowest free address: the smallest re-freed address below the frontier, else the first free
   * one at or above it. The frontier only moves up, so the scan is amortised O(1).
   */
  #allocateLowest(s: Span): bigint | undefined {
    let st = this.#lowest.get(s.id);
    if (!st) {
      st = { span: s, frontier: s.lo, freed: new MinHeap(), compactedSize: 0 };
      this.#lowest.set(s.id, st);
    }
    for (let top = st.freed.peek(); top !== undefined; top = st.freed.peek()) {
      if (this.#isFree(top)) return st.freed.pop();
      st.freed.pop(); // taken again since; it comes back when released and cooled down
    }
    for (let probes = 0; st.frontier <= s.hi; st.frontier++, probes++) {
      if (this.#isFree(st.frontier)) return st.frontier;
      if (probes === MAX_LINEAR_PROBES) return this.#probeForward(s, st.frontier);
    }
    return undefined;
  }

  #allocateRandom(s: Span): bigint | undefined {
    let start = s.lo;
    for (let i = 0; i < 8; i++) {
      start = s.lo + this.#randomBelow(s.size);
      if (this.#isFree(start)) return start;
    }
    return this.#probeForward(s, start);
  }

  #allocateHash(s: Span, key: string): bigint | undefined {
    return this.#probeForward(s, s.lo + (fnv1a64(key) % s.size));
  }

  #oldestCoolingIn(s: Span): bigint | undefined {
    for (const v of this.#cooling.keys()) {
      if (v >= s.lo && v <= s.hi) return v;
    }
    return undefined;
  }

  /** A uniform-enough integer in [0, n), from as many 32-bit draws as `n` needs. */
  #randomBelow(n: bigint): bigint {
    let r = 0n;
    for (let bits = 0n; (1n << bits) < n; bits += 32n) {
      r = (r << 32n) | BigInt(Math.floor(this.#random() * 0x1_0000_0000));
    }
    return r % n;
  }

  #usableIn(s: Span): bigint {
    let n = s.size;
    for (const r of [this.#reservedFirst, this.#reservedLast]) {
      if (r !== undefined && r >= s.lo && r <= s.hi) n--;
    }
    return n;
  }

  #subSpan(range: Prefix): Span {
    if (range.ip.family !== this.cidr.ip.family || !prefixCovers(this.cidr, range)) {
      throw new CniError(
        CniCode.invalidConfig,
        `range ${formatPrefix(range)} is not inside the node's ${
          familyName(this.cidr.ip.family)
        } CIDR ${formatPrefix(this.cidr)}`,
      );
    }
    return span({ ip: networkOf(range), len: range.len });
  }

  #exhausted(s: Span): PoolExhaustedError {
    const usable = this.#usableIn(s);
    const where = s.id === this.#whole.id
      ? `the node's ${familyName(this.cidr.ip.family)} CIDR ${formatPrefix(s.prefix)}`
      : `${formatPrefix(s.prefix)}`;
    const detail = usable === 0n
      ? "it has no usable address"
      : usable <= BigInt(MAX_LINEAR_PROBES)
      ? `all ${usable} usable addresses are in use`
      : `no free address found after ${MAX_LINEAR_PROBES + MAX_RANDOM_PROBES} probes`;
    return new PoolExhaustedError(s.prefix, `no free address in ${where}: ${detail}`);
  }
}

/** What `lowest` knows about one range. */
interface LowestState {
  span: Span;
  /** Every address of the span below this is busy, or was busy and is now in `freed`. */
  frontier: bigint;
  /** Addresses below the frontier that became free again (may hold stale entries). */
  freed: MinHeap;
  /** Heap size after the last clean-up of stale entries. */
  compactedSize: number;
}

/** A binary min-heap of integers. */
class MinHeap {
  #items: bigint[] = [];

  get size(): number {
    return this.#items.length;
  }

  /** Keeps only the distinct entries that pass `keep`. */
  retain(keep: (v: bigint) => boolean): void {
    const kept = [...new Set(this.#items)].filter(keep).sort((
      a,
      b,
    ) => (a < b ? -1 : a > b ? 1 : 0));
    this.#items = kept; // a sorted array is a valid heap
  }

  peek(): bigint | undefined {
    return this.#items[0];
  }

  push(v: bigint): void {
    const a = this.#items;
    a.push(v);
    for (let i = a.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (a[parent] <= a[i]) break;
      [a[parent], a[i]] = [a[i], a[parent]];
      i = parent;
    }
  }

  pop(): bigint | undefined {
    const a = this.#items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      for (let i = 0;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && a[l] < a[m]) m = l;
        if (r < a.length && a[r] < a[m]) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i], a[m]];
        i = m;
      }
    }
    return top;
  }
}

function span(prefix: Prefix): Span {
  const lo = ipToBigInt(prefix.ip);
  const size = prefixSize(prefix);
  return { prefix, lo, hi: lo + size - 1n, size, id: formatPrefix(prefix) };
}
