import assert from "node:assert/strict";
import { formatIP, parseIP, parsePrefix } from "../netlink/ip.ts";
import {
  AddressInUseError,
  AddressPool,
  type AddressPoolOptions,
  NO_FREE_ADDRESS,
  PoolExhaustedError,
  unusableReason,
} from "./ipam.ts";
import { CniCode, CniError } from "./protocol.ts";
import { Prng } from "../tests/helpers/prng.ts";

function pool(cidr: string, opts: AddressPoolOptions = {}): AddressPool {
  return new AddressPool(parsePrefix(cidr), opts);
}

function take(p: AddressPool, n: number, algo: "next" | "lowest" | "random" | "hash" = "next") {
  return Array.from({ length: n }, () => formatIP(p.allocate({ algo })));
}

/** A clock the test moves by hand. */
function manualClock(start = 1_000_000) {
  const clock = { t: start, now: () => clock.t };
  return clock;
}

/** Deterministic uniform numbers in [0, 1) from `seed`. */
function seeded(seed: number): () => number {
  const prng = new Prng(seed);
  return () => prng.next();
}

Deno.test("next: round robin from the first usable address, skipping the network address", () => {
  const p = pool("10.0.0.0/29");
  assert.deepEqual(take(p, 3), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
  p.release(parseIP("10.0.0.1"));
  assert.equal(formatIP(p.allocate({ algo: "next" })), "10.0.0.4");
});

Deno.test("next: the cursor keeps advancing after releases and wraps around", () => {
  const clock = manualClock();
  const p = pool("10.0.0.0/29", { now: clock.now, cooldownMs: 10 });
  const all = take(p, 6);
  assert.deepEqual(all, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
  p.release(parseIP("10.0.0.2"));
  p.release(parseIP("10.0.0.5"));
  clock.t += 10;
  // Wraps past the broadcast and the network address to the first free one after the cursor.
  assert.equal(formatIP(p.allocate({ algo: "next" })), "10.0.0.2");
  assert.equal(formatIP(p.allocate({ algo: "next" })), "10.0.0.5");
});

Deno.test("next: IPv6 skips the subnet-router anycast address", () => {
  const p = pool("fd00::/64");
  assert.deepEqual(take(p, 2), ["fd00::1", "fd00::2"]);
});

Deno.test("lowest: always the lowest free address", () => {
  const clock = manualClock();
  const p = pool("10.1.0.0/24", { now: clock.now, cooldownMs: 100 });
  assert.deepEqual(take(p, 5, "lowest"), [
    "10.1.0.1",
    "10.1.0.2",
    "10.1.0.3",
    "10.1.0.4",
    "10.1.0.5",
  ]);
  p.release(parseIP("10.1.0.2"));
  // Still cooling: skipped.
  assert.equal(formatIP(p.allocate({ algo: "lowest" })), "10.1.0.6");
  clock.t += 100;
  assert.equal(formatIP(p.allocate({ algo: "lowest" })), "10.1.0.2");
  assert.equal(formatIP(p.allocate({ algo: "lowest" })), "10.1.0.7");
});

Deno.test("random: distinct addresses inside the range, driven by the injected source", () => {
  const p = pool("fd00:1::/120", { random: seeded(7) });
  const got = new Set(take(p, 200, "random"));
  assert.equal(got.size, 200);
  for (const a of got) assert.ok(a.startsWith("fd00:1::"), a);
  assert.ok(!got.has("fd00:1::"));
  // Same seed, same sequence.
  const q = pool("fd00:1::/120", { random: seeded(7) });
  assert.deepEqual(take(q, 200, "random"), [...got]);
});

Deno.test("random: fills a small range completely, then reports exhaustion", () => {
  const p = pool("10.9.0.0/29", { random: seeded(1) });
  const got = take(p, 6, "random").sort();
  assert.deepEqual(got, ["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
  assert.throws(() => p.allocate({ algo: "random" }), PoolExhaustedError);
});

Deno.test("hash: stable per key, different keys spread, collisions probe forward", () => {
  const a = pool("fd00::/64");
  const b = pool("fd00::/64");
  const ipA = formatIP(a.allocate({ algo: "hash", key: "default/web-0" }));
  const ipB = formatIP(b.allocate({ algo: "hash", key: "default/web-0" }));
  assert.equal(ipA, ipB);
  const other = formatIP(a.allocate({ algo: "hash", key: "default/web-1" }));
  assert.notEqual(other, ipA);
  // Same key again while the first is held: the next address up.
  const again = a.allocate({ algo: "hash", key: "default/web-0" });
  assert.equal(formatIP(again), formatIP(b.allocate({ algo: "hash", key: "default/web-0" })));
  assert.notEqual(formatIP(again), ipA);
  // After release and cooldown the pod gets its address back.
  const clock = manualClock();
  const c = pool("10.2.0.0/16", { now: clock.now });
  const first = formatIP(c.allocate({ algo: "hash", key: "kube-system/dns" }));
  c.release(parseIP(first));
  clock.t += 30_000;
  assert.equal(formatIP(c.allocate({ algo: "hash", key: "kube-system/dns" })), first);
});

Deno.test("sub-range: every algorithm stays inside it", () => {
  const p = pool("fd00:f10c:0:1::/64", { random: seeded(3) });
  const range = parsePrefix("fd00:f10c:0:1::100/120");
  for (const algo of ["next", "lowest", "random", "hash"] as const) {
    for (let i = 0; i < 20; i++) {
      const ip = p.allocate({ algo, range, key: `ns/pod-${i}` });
      assert.match(formatIP(ip), /^fd00:f10c:0:1::1[0-9a-f]{2}$/);
    }
  }
  assert.equal(p.allocated, 80);
  // The sub-range's own first address is fine; only the node CIDR's network address is not.
  const q = pool("10.0.0.0/24");
  assert.equal(
    formatIP(q.allocate({ algo: "next", range: parsePrefix("10.0.0.16/28") })),
    "10.0.0.16",
  );
  assert.equal(
    formatIP(q.allocate({ algo: "lowest", range: parsePrefix("10.0.0.0/28") })),
    "10.0.0.1",
  );
});

Deno.test("sub-range: rejects a range outside the node CIDR or of the other family", () => {
  const p = pool("10.0.0.0/24");
  for (const r of ["10.0.1.0/28", "10.0.0.0/23", "fd00::/120"]) {
    assert.throws(
      () => p.allocate({ algo: "next", range: parsePrefix(r) }),
      (e: unknown) => e instanceof CniError && e.code === CniCode.invalidConfig,
    );
  }
});

Deno.test("sub-range: exhaustion names the sub-range", () => {
  const p = pool("10.0.0.0/24");
  const range = parsePrefix("10.0.0.8/30");
  take(p, 0);
  for (let i = 0; i < 4; i++) p.allocate({ algo: "next", range });
  assert.throws(
    () => p.allocate({ algo: "next", range }),
    { message: "no free address in 10.0.0.8/30: all 4 usable addresses are in use" },
  );
});

Deno.test("cooldown: released addresses are skipped until it expires", () => {
  const clock = manualClock();
  const p = pool("10.3.0.0/29", { now: clock.now, cooldownMs: 1_000 });
  take(p, 6, "lowest");
  p.release(parseIP("10.3.0.3"));
  assert.equal(p.allocated, 5);
  assert.equal(p.cooling, 1);
  clock.t += 999;
  assert.equal(p.cooling, 1);
  clock.t += 1;
  assert.equal(p.cooling, 0);
  assert.equal(formatIP(p.allocate({ algo: "random" })), "10.3.0.3");
});

Deno.test("cooldown: when only cooling addresses remain, the oldest is reused", () => {
  const clock = manualClock();
  const p = pool("10.4.0.0/29", { now: clock.now });
  take(p, 6);
  p.release(parseIP("10.4.0.5"));
  clock.t += 5;
  p.release(parseIP("10.4.0.2"));
  clock.t += 5;
  p.release(parseIP("10.4.0.4"));
  for (const algo of ["next", "lowest", "random", "hash"] as const) {
    const q = pool("10.4.0.0/29", { now: clock.now });
    take(q, 6);
    q.release(parseIP("10.4.0.5"));
    q.release(parseIP("10.4.0.2"));
    assert.equal(formatIP(q.allocate({ algo, key: "a/b" })), "10.4.0.5", algo);
  }
  assert.deepEqual(take(p, 3), ["10.4.0.5", "10.4.0.2", "10.4.0.4"]);
  assert.throws(() => p.allocate({ algo: "next" }), PoolExhaustedError);
});

Deno.test("cooldown: a backdated release (restored after a restart) ends sooner", () => {
  const clock = manualClock();
  const p = pool("10.3.0.0/30", { now: clock.now, cooldownMs: 1_000 });
  p.reserve(parseIP("10.3.0.1"));
  p.reserve(parseIP("10.3.0.2"));
  p.release(parseIP("10.3.0.2"));
  p.release(parseIP("10.3.0.1"), clock.t - 900);
  assert.equal(p.cooling, 2);
  clock.t += 100;
  assert.equal(p.cooling, 1);
  assert.equal(formatIP(p.allocate({ algo: "lowest" })), "10.3.0.1");
});

Deno.test("cooldown: an explicit reserve takes a cooling address", () => {
  const p = pool("fd00::/120");
  const ip = p.allocate({ algo: "next" });
  p.release(ip);
  p.reserve(ip);
  assert.ok(p.isAllocated(ip));
  assert.equal(p.cooling, 0);
});

Deno.test("exhaustion of a /29: 6 addresses, then a clear error with code 100", () => {
  for (const algo of ["next", "lowest", "random", "hash"] as const) {
    const p = pool("192.168.7.8/29");
    const got = Array.from({ length: 6 }, (_, i) => formatIP(p.allocate({ algo, key: `n/${i}` })));
    assert.equal(new Set(got).size, 6);
    assert.ok(!got.includes("192.168.7.8") && !got.includes("192.168.7.15"), algo);
    assert.throws(() => p.allocate({ algo, key: "n/x" }), (e: unknown) => {
      assert.ok(e instanceof PoolExhaustedError);
      assert.equal(e.code, NO_FREE_ADDRESS);
      assert.equal(
        e.message,
        "no free address in the node's IPv4 CIDR 192.168.7.8/29: all 6 usable addresses are in use",
      );
      return true;
    });
  }
});

Deno.test("exhaustion of a /125: 7 addresses (only :: is skipped)", () => {
  for (const algo of ["next", "lowest", "random", "hash"] as const) {
    const p = pool("fd00:f10c::/125");
    const got = Array.from({ length: 7 }, (_, i) => formatIP(p.allocate({ algo, key: `n/${i}` })));
    assert.equal(new Set(got).size, 7);
    assert.ok(!got.includes("fd00:f10c::"));
    assert.ok(got.includes("fd00:f10c::7"));
    assert.throws(() => p.allocate({ algo, key: "n/x" }), {
      name: "PoolExhaustedError",
      message: "no free address in the node's IPv6 CIDR fd00:f10c::/125: " +
        "all 7 usable addresses are in use",
    });
  }
});

Deno.test("point-to-point sized CIDRs have no reserved addresses", () => {
  assert.deepEqual(take(pool("10.0.0.0/31"), 2).sort(), ["10.0.0.0", "10.0.0.1"]);
  assert.deepEqual(take(pool("10.0.0.7/32"), 1), ["10.0.0.7"]);
  assert.deepEqual(take(pool("fd00::/127"), 2).sort(), ["fd00::", "fd00::1"]);
  assert.equal(pool("10.0.0.0/30").capacity, 2n);
  assert.equal(pool("10.0.0.0/31").capacity, 2n);
  assert.equal(pool("fd00::/126").capacity, 3n);
  assert.equal(pool("fd00::/64").capacity, (1n << 64n) - 1n);
});

Deno.test("reserve: conflicts, reserved addresses and foreign addresses", () => {
  const p = pool("10.5.0.0/24");
  p.reserve(parseIP("10.5.0.7"));
  assert.ok(p.isAllocated(parseIP("10.5.0.7")));
  assert.throws(() => p.reserve(parseIP("10.5.0.7")), (e: unknown) => {
    assert.ok(e instanceof AddressInUseError);
    assert.equal(e.code, CniCode.invalidConfig);
    assert.equal(e.message, "address 10.5.0.7 is already in use");
    return true;
  });
  assert.throws(() => p.reserve(parseIP("10.5.0.0")), /network address of 10\.5\.0\.0\/24/);
  assert.throws(() => p.reserve(parseIP("10.5.0.255")), /broadcast address/);
  assert.throws(() => p.reserve(parseIP("10.6.0.1")), /outside 10\.5\.0\.0\/24/);
  assert.throws(() => p.reserve(parseIP("fd00::1")), /outside/);
  // Allocation goes around the reserved address.
  const got = Array.from({ length: 8 }, () => formatIP(p.allocate({ algo: "lowest" })));
  assert.ok(!got.includes("10.5.0.7"));
  assert.equal(got[6], "10.5.0.8");
});

Deno.test("release: unknown addresses and the other family are no-ops", () => {
  const p = pool("10.5.0.0/24");
  p.release(parseIP("10.5.0.9"));
  p.release(parseIP("fd00::9"));
  assert.equal(p.allocated, 0);
  assert.equal(p.cooling, 0);
  assert.equal(p.isAllocated(parseIP("fd00::9")), false);
});

Deno.test("unusableReason explains the reserved addresses", () => {
  const v4 = parsePrefix("10.0.0.0/24");
  assert.equal(unusableReason(v4, parseIP("10.0.0.1")), undefined);
  assert.equal(
    unusableReason(v4, parseIP("10.0.0.0")),
    "10.0.0.0 is the network address of 10.0.0.0/24",
  );
  assert.equal(
    unusableReason(parsePrefix("fd00::/64"), parseIP("fd00::")),
    "fd00:: is the subnet-router anycast address of fd00::/64",
  );
  assert.equal(unusableReason(parsePrefix("fd00::/64"), parseIP("fd00::ffff")), undefined);
});

Deno.test("100k allocations in a /64 are quick, and cost does not grow with the pool", () => {
  for (const algo of ["next", "lowest", "random", "hash"] as const) {
    const p = pool("fd00:f10c:0:1::/64", { random: seeded(11) });
    const time = (n: number, from: number) => {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) p.allocate({ algo, key: `ns/pod-${from + i}` });
      return performance.now() - t0;
    };
    const early = time(1_000, 0);
    const t0 = performance.now();
    time(98_000, 1_000);
    const late = time(1_000, 99_000);
    const total = performance.now() - t0 + early;
    assert.equal(p.allocated, 100_000);
    assert.ok(total < 5_000, `${algo}: 100k allocations took ${total.toFixed(0)} ms`);
    // Generous bound: only a cost that grows with the pool's fill would trip it.
    assert.ok(
      late < Math.max(early * 5, 200),
      `${algo}: allocations 99k..100k took ${late.toFixed(1)} ms vs ${early.toFixed(1)} ms`,
    );
  }
});

Deno.test("the 10,000th allocation costs about the same as the 10th (with churn)", () => {
  const clock = manualClock();
  const p = pool("fd00::/64", { now: clock.now, cooldownMs: 1_000 });
  const held: ReturnType<AddressPool["allocate"]>[] = [];
  const per: number[] = [];
  for (let i = 0; i < 10_000; i++) {
    const t0 = performance.now();
    held.push(p.allocate({ algo: i % 2 ? "lowest" : "next" }));
    per.push(performance.now() - t0);
    if (i % 3 === 0) p.release(held.splice(i % held.length, 1)[0]);
    clock.t += 1;
  }
  const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];
  const first = median(per.slice(0, 100));
  const last = median(per.slice(-100));
  assert.ok(last < Math.max(first * 5, 0.05), `${last} ms vs ${first} ms`);
});

Deno.test("model check: random churn never double-allocates and lowest is really lowest", () => {
  const rnd = seeded(42);
  const clock = manualClock();
  const cooldownMs = 20;
  const p = pool("10.7.0.0/26", { now: clock.now, cooldownMs, random: seeded(5) });
  const sub = parsePrefix("10.7.0.32/28");
  const held = new Map<string, number>(); // address → last octet
  const releasedAt = new Map<number, number>();
  const octet = (ip: string) => Number(ip.split(".")[3]);
  for (let step = 0; step < 5_000; step++) {
    clock.t += 1;
    if (held.size > 0 && (rnd() < 0.45 || held.size > 55)) {
      const victims = [...held.keys()];
      const victim = victims[Math.floor(rnd() * victims.length)];
      p.release(parseIP(victim));
      held.delete(victim);
      releasedAt.set(octet(victim), clock.t);
      continue;
    }
    const algo = (["next", "lowest", "random", "hash"] as const)[Math.floor(rnd() * 4)];
    const range = rnd() < 0.3 ? sub : undefined;
    const [lo, hi] = range ? [32, 47] : [1, 62];
    const free = [];
    for (let o = lo; o <= hi; o++) {
      const cooling = (releasedAt.get(o) ?? -Infinity) > clock.t - cooldownMs;
      if (!held.has(`10.7.0.${o}`) && !cooling) free.push(o);
    }
    let got: string;
    try {
      got = formatIP(p.allocate({ algo, range, key: `k/${step}` }));
    } catch (e) {
      assert.ok(e instanceof PoolExhaustedError, String(e));
      const anyCooling = [...releasedAt].some(([o]) =>
        o >= lo && o <= hi && !held.has(`10.7.0.${o}`)
      );
      assert.equal(free.length, 0, `step ${step}: exhausted with free ${free}`);
      assert.ok(!anyCooling, `step ${step}: exhausted with cooling addresses left`);
      continue;
    }
    const o = octet(got);
    assert.ok(!held.has(got), `step ${step}: ${got} handed out twice`);
    assert.ok(o >= lo && o <= hi, `step ${step}: ${got} outside the range`);
    if (free.length > 0) assert.ok(free.includes(o), `step ${step}: ${got} was not free`);
    if (algo === "lowest" && free.length > 0) assert.equal(o, free[0], `step ${step}`);
    held.set(got, o);
    releasedAt.delete(o);
  }
  assert.equal(p.allocated, held.size);
});
