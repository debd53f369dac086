import assert from "node:assert/strict";
import {
  AF_INET,
  AF_INET6,
  bigIntToIP,
  canonicalPrefix,
  formatIP,
  formatPrefix,
  hostPrefix,
  InvalidAddressError,
  ipEqual,
  ipToBigInt,
  networkOf,
  parseIP,
  parsePrefix,
  prefixContains,
  prefixCovers,
  prefixSize,
  tryParseIP,
} from "./ip.ts";

const roundTrip = (text: string) => formatIP(parseIP(text));

Deno.test("IPv6 text is formatted in the RFC 5952 canonical form", () => {
  const cases: [string, string][] = [
    // §4.1 leading zeros dropped, §4.3 lower case
    ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    // §4.2.1 the longest run of zero groups becomes ::
    ["2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"],
    // §4.2.2 a single zero group is not shortened
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    // §4.2.3 equal runs: the first one is shortened
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["fe80:0:0:0:0:0:0:1", "fe80::1"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
    ["fd00::5", "fd00::5"],
  ];
  for (const [input, want] of cases) assert.equal(roundTrip(input), want, input);
});

Deno.test("IPv4-mapped and dotted-quad-tail IPv6 addresses parse to the right bytes", () => {
  const mapped = parseIP("::ffff:192.0.2.1");
  assert.equal(mapped.family, AF_INET6);
  assert.deepEqual(
    [...mapped.bytes],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1],
  );
  // It stays an IPv6 address: never silently turned into 192.0.2.1.
  assert.notEqual(mapped.family, AF_INET);
  // RFC 5952 §5 recommends "::ffff:192.0.2.1"; either text must parse back to the same bytes.
  assert.ok(["::ffff:192.0.2.1", "::ffff:c000:201"].includes(formatIP(mapped)));
  assert.ok(ipEqual(parseIP(formatIP(mapped)), mapped));
  assert.ok(ipEqual(parseIP("::ffff:c000:201"), mapped));
  assert.ok(ipEqual(parseIP("64:ff9b::192.0.2.33"), parseIP("64:ff9b::c000:221")));
  assert.ok(ipEqual(parseIP("1:2:3:4:5:6:1.2.3.4"), parseIP("1:2:3:4:5:6:102:304")));
});

Deno.test("IPv4 addresses parse and format", () => {
  const ip = parseIP("10.1.0.5");
  assert.equal(ip.family, AF_INET);
  assert.deepEqual([...ip.bytes], [10, 1, 0, 5]);
  assert.equal(formatIP(ip), "10.1.0.5");
  assert.equal(roundTrip("0.0.0.0"), "0.0.0.0");
  assert.equal(roundTrip("255.255.255.255"), "255.255.255.255");
});

Deno.test("invalid addresses are rejected with InvalidAddressError", () => {
  const bad = [
    "",
    " ",
    "1.2.3",
    "1.2.3.4.5",
    "256.1.1.1",
    "01.2.3.4", // leading zero: octal in some parsers, ambiguous, refused
    "1.2.3.-4",
    "1.2.3.4 ",
    "a.b.c.d",
    ":",
    ":::",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "12345::1",
    "g::1",
    "fe80::1%eth0", // zone IDs are not addresses
    "::ffff:256.0.0.1",
    "::1.2.3",
    "1:2:3:4:5:6:7:1.2.3.4", // the dotted tail takes two groups: nine in all
    "1.2.3.4/32",
  ];
  for (const text of bad) {
    assert.equal(tryParseIP(text), undefined, JSON.stringify(text));
    assert.throws(() => parseIP(text), InvalidAddressError, JSON.stringify(text));
  }
  assert.equal(tryParseIP(undefined as unknown as string), undefined);
  assert.throws(() => parseIP("nope"), /not an IP address: "nope"/);
});

Deno.test("prefixes parse, validate the length and optionally refuse host bits", () => {
  const p = parsePrefix("fd00:10::/64");
  assert.equal(p.len, 64);
  assert.equal(formatPrefix(p), "fd00:10::/64");
  assert.equal(formatPrefix(parsePrefix("10.0.0.0/8")), "10.0.0.0/8");
  assert.equal(formatPrefix(parsePrefix("::/0")), "::/0");
  assert.throws(() => parsePrefix("10.0.0.0/33"), /prefix length 33 too long/);
  assert.throws(() => parsePrefix("fd00::/129"), /too long/);
  assert.throws(() => parsePrefix("10.0.0.0"), /no \/length/);
  assert.throws(() => parsePrefix("10.0.0.0/"), InvalidAddressError);
  assert.throws(() => parsePrefix("10.0.0.0/08"), InvalidAddressError);
  assert.throws(() => parsePrefix("10.0.0.0/-1"), InvalidAddressError);
  assert.throws(() => parsePrefix("x/8"), InvalidAddressError);
  // Host bits: allowed by default, refused in strict mode with the right network named.
  assert.equal(formatPrefix(parsePrefix("10.1.2.3/8")), "10.1.2.3/8");
  assert.throws(() => parsePrefix("10.1.2.3/8", true), /network is 10\.0\.0\.0\/8/);
  assert.throws(() => parsePrefix("fd00::1/64", true), /network is fd00::\/64/);
});

Deno.test("prefix arithmetic: network, size, containment, cover, host prefix", () => {
  assert.equal(formatIP(networkOf(parsePrefix("10.1.2.3/16"))), "10.1.0.0");
  assert.equal(formatPrefix(canonicalPrefix(parsePrefix("fd00:1:2:3::9/48"))), "fd00:1:2::/48");
  assert.equal(prefixSize(parsePrefix("10.0.0.0/24")), 256n);
  assert.equal(prefixSize(parsePrefix("fd00::/64")), 1n << 64n);
  assert.equal(prefixSize(parsePrefix("::/0")), 1n << 128n);
  assert.ok(prefixContains(parsePrefix("fd00::/64"), parseIP("fd00::ffff")));
  assert.ok(!prefixContains(parsePrefix("fd00::/64"), parseIP("fd00:0:0:1::")));
  assert.ok(!prefixContains(parsePrefix("0.0.0.0/0"), parseIP("::1")), "families never mix");
  assert.ok(prefixCovers(parsePrefix("10.0.0.0/8"), parsePrefix("10.5.0.0/16")));
  assert.ok(!prefixCovers(parsePrefix("10.5.0.0/16"), parsePrefix("10.0.0.0/8")));
  assert.equal(formatPrefix(hostPrefix(parseIP("fd00::5"))), "fd00::5/128");
  assert.equal(formatPrefix(hostPrefix(parseIP("10.0.0.5"))), "10.0.0.5/32");
});

Deno.test("bigint conversion round-trips at the edges of both families", () => {
  assert.equal(ipToBigInt(parseIP("255.255.255.255")), 0xffffffffn);
  assert.equal(ipToBigInt(parseIP("::1")), 1n);
  const max6 = (1n << 128n) - 1n;
  assert.equal(formatIP(bigIntToIP(AF_INET6, max6)), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  assert.equal(formatIP(bigIntToIP(AF_INET, 0x0a000105n)), "10.0.1.5");
  for (const text of ["fd00::5", "2001:db8::1:0:0:1", "192.168.1.1"]) {
    const ip = parseIP(text);
    assert.ok(ipEqual(bigIntToIP(ip.family, ipToBigInt(ip)), ip), text);
  }
});
