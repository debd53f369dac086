import assert from "node:assert/strict";
import { formatIP, formatPrefix } from "../netlink/ip.ts";
import {
  AnnotationError,
  CNI_ARGS_IP_FIELD,
  parsePodAnnotations,
  pinnedAddressError,
  type PodAddressRequest,
  RUNTIME_IPS_FIELD,
  RuntimeAddressError,
  runtimeAddresses,
} from "./annotations.ts";
import { type NodeConfig, parseNodeConfig } from "./config.ts";
import { CniCode, CniError } from "./protocol.ts";

const dual = parseNodeConfig({
  cidr6: "fd00:f10c:0:1::/64",
  cidr4: "10.244.1.0/24",
  anycastCIDRs: ["fd00:f10c:ffff::/112", "10.96.0.0/28"],
}, "test");
const v6only = parseNodeConfig({ cidr6: "fd00:f10c:0:2::/64" }, "test");
const v4only = parseNodeConfig({ cidr4: "10.244.2.0/24" }, "test");

const P = "flock.fritzlab.net/";

function a(kv: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(kv).map(([k, v]) => [P + k, v]));
}

/** The request in text form, for readable comparisons. */
function show(r: PodAddressRequest) {
  const fam = (f: PodAddressRequest["ipv6"]) =>
    f && `${f.mode}${f.pinned ? " " + formatIP(f.pinned) : ""} in ${formatPrefix(f.range)}`;
  return { ipv6: fam(r.ipv6), ipv4: fam(r.ipv4), algo: r.algo, anycast: r.anycast.map(formatIP) };
}

function rejects(
  annotations: Record<string, string>,
  node: NodeConfig,
  message: string,
): void {
  assert.throws(() => parsePodAnnotations(annotations, node), (e: unknown) => {
    assert.ok(e instanceof AnnotationError, `not an AnnotationError: ${e}`);
    assert.ok(e instanceof CniError);
    assert.equal(e.code, CniCode.invalidConfig);
    assert.equal(e.message, message);
    return true;
  });
}

Deno.test("defaults follow the node's CIDRs", () => {
  const nothing: (Record<string, string> | null | undefined)[] = [
    undefined,
    null,
    {},
    { "app.kubernetes.io/name": "web" },
  ];
  for (const none of nothing) {
    assert.deepEqual(show(parsePodAnnotations(none, dual)), {
      ipv6: "auto in fd00:f10c:0:1::/64",
      ipv4: "auto in 10.244.1.0/24",
      algo: "next",
      anycast: [],
    });
  }
  assert.deepEqual(show(parsePodAnnotations({}, v6only)).ipv4, undefined);
  assert.deepEqual(show(parsePodAnnotations({}, v4only)).ipv6, undefined);
  assert.equal(show(parsePodAnnotations({}, v4only)).ipv4, "auto in 10.244.2.0/24");
});

Deno.test("pinned addresses, sub-ranges, none, algorithms and anycast", () => {
  const r = parsePodAnnotations(
    a({
      ipv6: "fd00:f10c:0:1:0:0:0:80",
      cidr6: "fd00:f10c:0:1::/120",
      ipv4: "none",
      "ip-algo": "hash",
      anycast: " fd00:f10c:ffff::5 ,fd00:f10c:ffff::6",
    }),
    dual,
  );
  assert.deepEqual(show(r), {
    ipv6: "pinned fd00:f10c:0:1::80 in fd00:f10c:0:1::/120",
    ipv4: undefined,
    algo: "hash",
    anycast: ["fd00:f10c:ffff::5", "fd00:f10c:ffff::6"],
  });
  assert.deepEqual(
    show(parsePodAnnotations(a({ ipv6: "auto", cidr4: "10.244.1.128/25", anycast: "" }), dual)),
    {
      ipv6: "auto in fd00:f10c:0:1::/64",
      ipv4: "auto in 10.244.1.128/25",
      algo: "next",
      anycast: [],
    },
  );
  for (const algo of ["next", "lowest", "random", "hash"]) {
    assert.equal(parsePodAnnotations(a({ "ip-algo": algo }), dual).algo, algo);
  }
  assert.deepEqual(
    show(parsePodAnnotations(a({ ipv4: "10.244.1.7", anycast: "10.96.0.3" }), dual)).anycast,
    ["10.96.0.3"],
  );
});

Deno.test("bad addresses name the annotation and the reason", () => {
  rejects(
    a({ ipv6: "10.0.0.1" }),
    dual,
    'annotation flock.fritzlab.net/ipv6: "10.0.0.1" is not an IPv6 address',
  );
  rejects(
    a({ ipv4: "fd00::1" }),
    dual,
    'annotation flock.fritzlab.net/ipv4: "fd00::1" is not an IPv4 address',
  );
  rejects(
    a({ ipv6: "Auto" }),
    dual,
    'annotation flock.fritzlab.net/ipv6: "Auto" is not "auto", "none" or an IPv6 address',
  );
  rejects(a({ ipv6: "" }), dual, "annotation flock.fritzlab.net/ipv6: empty value");
  rejects(
    a({ ipv6: "fd00:f10c:0:2::5" }),
    dual,
    "annotation flock.fritzlab.net/ipv6: fd00:f10c:0:2::5 is outside the node's IPv6 CIDR " +
      "fd00:f10c:0:1::/64",
  );
  rejects(
    a({ ipv4: "10.244.1.200", cidr4: "10.244.1.0/25" }),
    dual,
    "annotation flock.fritzlab.net/ipv4: 10.244.1.200 is outside flock.fritzlab.net/cidr4 " +
      "10.244.1.0/25",
  );
  rejects(
    a({ ipv4: "10.244.1.255" }),
    dual,
    "annotation flock.fritzlab.net/ipv4: 10.244.1.255 is the broadcast address of 10.244.1.0/24",
  );
  rejects(
    a({ ipv6: "fd00:f10c:0:1::" }),
    dual,
    "annotation flock.fritzlab.net/ipv6: fd00:f10c:0:1:: is the subnet-router anycast address " +
      "of fd00:f10c:0:1::/64",
  );
});

Deno.test("bad sub-ranges", () => {
  rejects(
    a({ cidr6: "fd00:f10c:0:2::/120" }),
    dual,
    "annotation flock.fritzlab.net/cidr6: fd00:f10c:0:2::/120 is not inside the node's IPv6 " +
      "CIDR fd00:f10c:0:1::/64",
  );
  rejects(
    a({ cidr4: "10.244.0.0/16" }),
    dual,
    "annotation flock.fritzlab.net/cidr4: 10.244.0.0/16 is not inside the node's IPv4 CIDR " +
      "10.244.1.0/24",
  );
  rejects(
    a({ cidr6: "10.244.1.0/25" }),
    dual,
    'annotation flock.fritzlab.net/cidr6: "10.244.1.0/25" is not an IPv6 prefix',
  );
  rejects(
    a({ cidr4: "10.244.1.1/25" }),
    dual,
    "annotation flock.fritzlab.net/cidr4: 10.244.1.1/25 has host bits set; the network is " +
      "10.244.1.0/25",
  );
  rejects(
    a({ cidr4: "x" }),
    dual,
    'annotation flock.fritzlab.net/cidr4: not a prefix (no /length): "x"',
  );
  rejects(
    a({ ipv4: "none", cidr4: "10.244.1.0/25" }),
    dual,
    'annotation flock.fritzlab.net/cidr4: has no effect because flock.fritzlab.net/ipv4 is "none"',
  );
});

Deno.test("asking for a family the node does not have", () => {
  const noV4 = "the node has no IPv4 CIDR (NodeConfig cidr4)";
  rejects(a({ ipv4: "auto" }), v6only, `annotation flock.fritzlab.net/ipv4: ${noV4}`);
  rejects(a({ ipv4: "10.0.0.1" }), v6only, `annotation flock.fritzlab.net/ipv4: ${noV4}`);
  rejects(a({ cidr4: "10.0.0.0/24" }), v6only, `annotation flock.fritzlab.net/cidr4: ${noV4}`);
  rejects(
    a({ ipv6: "auto" }),
    v4only,
    "annotation flock.fritzlab.net/ipv6: the node has no IPv6 CIDR (NodeConfig cidr6)",
  );
  // "none" for a family the node lacks anyway is fine.
  assert.equal(parsePodAnnotations(a({ ipv4: "none" }), v6only).ipv4, undefined);
});

Deno.test("neither family", () => {
  const reason = "the pod would get neither an IPv6 nor an IPv4 address";
  rejects(a({ ipv6: "none", ipv4: "none" }), dual, `annotation flock.fritzlab.net/ipv6: ${reason}`);
  rejects(a({ ipv6: "none" }), v6only, `annotation flock.fritzlab.net/ipv6: ${reason}`);
  rejects(a({ ipv4: "none" }), v4only, `annotation flock.fritzlab.net/ipv4: ${reason}`);
});

Deno.test("algorithm and unknown keys", () => {
  rejects(
    a({ "ip-algo": "round-robin" }),
    dual,
    'annotation flock.fritzlab.net/ip-algo: unknown algorithm "round-robin" ' +
      "(known: next, lowest, random, hash)",
  );
  rejects(
    a({ "ipv6-algo": "next" }),
    dual,
    "annotation flock.fritzlab.net/ipv6-algo: unknown flock annotation " +
      "(known: ipv6, ipv4, cidr6, cidr4, ip-algo, anycast)",
  );
  // Similar-looking keys of other owners are not ours.
  assert.ok(parsePodAnnotations({ "flock.fritzlab.net.example/ipv6": "x" }, dual).ipv6);
});

Deno.test("anycast: inside the node's anycastCIDRs, no duplicates, matching a pod family", () => {
  const key = "annotation flock.fritzlab.net/anycast";
  rejects(
    a({ anycast: "fd00:f10c:fffe::1" }),
    dual,
    `${key}: fd00:f10c:fffe::1 is not inside the node's IPv6 anycastCIDRs (fd00:f10c:ffff::/112)`,
  );
  rejects(
    a({ anycast: "10.96.0.16" }),
    dual,
    `${key}: 10.96.0.16 is not inside the node's IPv4 anycastCIDRs (10.96.0.0/28)`,
  );
  rejects(
    a({ anycast: "fd00:f10c:ffff::1" }),
    v6only,
    `${key}: fd00:f10c:ffff::1: the node has no IPv6 anycastCIDRs`,
  );
  rejects(
    a({ anycast: "fd00:f10c:ffff::1,fd00:f10c:ffff:0::1" }),
    dual,
    `${key}: fd00:f10c:ffff::1 is listed twice`,
  );
  rejects(
    a({ anycast: "fd00:f10c:ffff::1," }),
    dual,
    `${key}: empty entry in "fd00:f10c:ffff::1,"`,
  );
  rejects(a({ anycast: "web" }), dual, `${key}: "web" is not an IP address`);
  rejects(
    a({ anycast: "10.96.0.3", ipv4: "none" }),
    dual,
    `${key}: 10.96.0.3 needs an IPv4 pod address, but the pod gets none`,
  );
});

/** The request for `runtimeConfig.ips` = `ips` (and annotations `kv`), in text form. */
function withIps(ips: unknown, kv: Record<string, string> = {}, node = dual) {
  return show(parsePodAnnotations(a(kv), node, { field: RUNTIME_IPS_FIELD, entries: ips }));
}

function rejectsIps(
  ips: unknown,
  message: string,
  kv: Record<string, string> = {},
  node = dual,
  field = RUNTIME_IPS_FIELD,
): void {
  assert.throws(() => parsePodAnnotations(a(kv), node, { field, entries: ips }), (e: unknown) => {
    assert.ok(e instanceof RuntimeAddressError, `not a RuntimeAddressError: ${e}`);
    assert.equal(e.code, CniCode.invalidConfig);
    assert.equal(e.message, message);
    return true;
  });
}

Deno.test("runtimeAddresses: runtimeConfig.ips first, else CNI_ARGS IP, else none", () => {
  assert.deepEqual(
    runtimeAddresses({ runtimeConfig: { ips: ["10.244.1.7"] } }, { IP: "10.244.1.8" }),
    { field: "runtimeConfig.ips", entries: ["10.244.1.7"] },
  );
  assert.deepEqual(runtimeAddresses({}, { IP: "10.244.1.8,fd00::8" }), {
    field: "CNI_ARGS IP",
    entries: ["10.244.1.8", "fd00::8"],
  });
  assert.equal(runtimeAddresses({ runtimeConfig: { portMappings: [] } }, {}), undefined);
  assert.equal(runtimeAddresses({}, { K8S_POD_NAME: "p" }), undefined);
});

Deno.test("runtimeConfig.ips pins its families like the ipv6/ipv4 annotations", () => {
  assert.deepEqual(withIps(["fd00:f10c:0:1::7", "10.244.1.7/24"]), {
    ipv6: "pinned fd00:f10c:0:1::7 in fd00:f10c:0:1::/64",
    ipv4: "pinned 10.244.1.7 in 10.244.1.0/24",
    algo: "next",
    anycast: [],
  });
  // A family the runtime does not pin is allocated as usual.
  assert.deepEqual(withIps(["10.244.1.7"]).ipv6, "auto in fd00:f10c:0:1::/64");
  assert.deepEqual(withIps([]).ipv4, "auto in 10.244.1.0/24");
  // An annotation may agree: absent, "auto" or the same address (in any spelling).
  assert.deepEqual(
    withIps(["fd00:f10c:0:1::7"], { ipv6: "fd00:f10c:0:1:0::7", ipv4: "auto" }).ipv6,
    "pinned fd00:f10c:0:1::7 in fd00:f10c:0:1::/64",
  );
  assert.deepEqual(
    withIps(["10.244.1.7"], { cidr4: "10.244.1.0/28" }).ipv4,
    "pinned 10.244.1.7 in 10.244.1.0/28",
  );
  const request = parsePodAnnotations({}, dual, {
    field: CNI_ARGS_IP_FIELD,
    entries: ["10.244.1.9"],
  });
  assert.equal(request.ipv4?.pinnedBy, "CNI_ARGS IP");
  const inUse = pinnedAddressError(request.ipv4!, "10.244.1.9 is in use");
  assert.equal(inUse.message, "CNI_ARGS IP: 10.244.1.9 is in use");
  const annotated = parsePodAnnotations(a({ ipv4: "10.244.1.9" }), dual);
  assert.ok(pinnedAddressError(annotated.ipv4!, "in use") instanceof AnnotationError);
});

Deno.test("bad runtimeConfig.ips entries are invalid configuration naming the field", () => {
  const f = "runtimeConfig.ips";
  rejectsIps("10.244.1.7", `${f}: must be a list of IP addresses`);
  rejectsIps([7], `${f}: 7 is not a string`);
  rejectsIps(["web"], `${f}: "web" is not an IP address`);
  rejectsIps(["10.244.1.7/33"], `${f}: "10.244.1.7/33" is not an IP address`);
  rejectsIps(
    ["10.244.1.7", "10.244.1.8"],
    `${f}: two IPv4 addresses (10.244.1.7, 10.244.1.8); a flock pod has one address per family`,
  );
  rejectsIps(
    ["10.9.0.7"],
    `${f}: 10.9.0.7 is outside the node's IPv4 CIDR 10.244.1.0/24`,
  );
  rejectsIps(
    ["10.244.1.255"],
    `${f}: 10.244.1.255 is the broadcast address of 10.244.1.0/24`,
  );
  rejectsIps(
    ["fd00:f10c:0:2::7"],
    `${f}: the node has no IPv6 CIDR (NodeConfig cidr6)`,
    {},
    v4only,
  );
  rejectsIps(
    ["10.244.1.200"],
    `${f}: 10.244.1.200 is outside flock.fritzlab.net/cidr4 10.244.1.0/25`,
    { cidr4: "10.244.1.0/25" },
  );
  rejectsIps(
    ["10.244.1.7"],
    `${f}: 10.244.1.7 conflicts with annotation flock.fritzlab.net/ipv4="10.244.1.8"`,
    { ipv4: "10.244.1.8" },
  );
  rejectsIps(
    ["fd00:f10c:0:1::7"],
    `${f}: fd00:f10c:0:1::7 conflicts with annotation flock.fritzlab.net/ipv6="none"`,
    { ipv6: "none" },
  );
  rejectsIps(
    ["10.9.0.7"],
    "CNI_ARGS IP: 10.9.0.7 is outside the node's IPv4 CIDR 10.244.1.0/24",
    {},
    dual,
    CNI_ARGS_IP_FIELD,
  );
});

Deno.test("a sub-range with no usable address is an error naming the annotation", () => {
  rejects(
    a({ cidr4: "10.244.1.255/32" }),
    dual,
    "annotation flock.fritzlab.net/cidr4: 10.244.1.255/32 has no usable address: " +
      "10.244.1.255 is the broadcast address of 10.244.1.0/24",
  );
  rejects(
    a({ cidr6: "fd00:f10c:0:1::/128" }),
    dual,
    "annotation flock.fritzlab.net/cidr6: fd00:f10c:0:1::/128 has no usable address: " +
      "fd00:f10c:0:1:: is the subnet-router anycast address of fd00:f10c:0:1::/64",
  );
  assert.equal(
    show(parsePodAnnotations(a({ cidr4: "10.244.1.254/32" }), dual)).ipv4,
    "auto in 10.244.1.254/32",
  );
});
