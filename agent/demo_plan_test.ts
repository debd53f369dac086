import assert from "node:assert/strict";
import { DEMO_ANYCAST, MAX_DEMO_NODES, nodeConfigObject, nthBlock, planDemo } from "./demo_plan.ts";
import { EMBEDDED_DEFAULT_CONFIG, parseNodeConfig, parseNodeConfigText } from "./config.ts";
import { birdInputFor } from "./routing.ts";
import { renderBirdConfig } from "../bird/config.ts";

Deno.test("planDemo: every node has a valid NodeConfig of its own and peers with all others", () => {
  const plan = planDemo(3, "abc123");
  assert.equal(plan.fabricNs, "flk-demo-abc123-fabric");
  const names = [plan.fabricNs, ...plan.nodes.flatMap((n) => [n.ns, ...n.pods.map((p) => p.ns)])];
  assert.equal(new Set(names).size, names.length, "namespace names are distinct");
  for (const name of names) assert.match(name, /^flk-demo-abc123-/);
  for (const field of ["cidr6", "cidr4"] as const) {
    const cidrs = plan.nodes.map((n) => n.spec[field]);
    assert.equal(new Set(cidrs).size, cidrs.length, `distinct ${field}`);
  }
  for (const node of plan.nodes) {
    assert.ok(node.fabricPort.length <= 15, "an interface name fits IFNAMSIZ");
    const config = parseNodeConfig(nodeConfigObject(node), node.name);
    assert.equal(config.name, node.name);
    const others = plan.nodes.filter((o) => o !== node);
    assert.deepEqual(
      node.spec.bgp?.peers,
      others.map((o) => ({ address: o.ipv4, asn: o.asn })),
    );
    const bird = renderBirdConfig(birdInputFor(config, node.name, []));
    assert.match(bird, new RegExp(`router id ${node.ipv4.replaceAll(".", "\\.")};`));
    for (const o of others) assert.ok(bird.includes(`neighbor ${o.ipv4} as ${o.asn};`));
    // The web pod serves the anycast address inside the node's anycast ranges.
    const web = node.pods.find((p) => p.id.endsWith("-web"))!;
    assert.equal(
      web.annotations["flock.fritzlab.net/anycast"],
      `${DEMO_ANYCAST.ipv6},${DEMO_ANYCAST.ipv4}`,
    );
    assert.deepEqual(config.spec.anycastCIDRs, [DEMO_ANYCAST.cidr6, DEMO_ANYCAST.cidr4]);
  }
});

Deno.test("planDemo: node 1 runs on the embedded default config, node N on its Nth blocks", () => {
  const defaults = parseNodeConfigText(EMBEDDED_DEFAULT_CONFIG, "embedded").spec;
  const [node1, node2, node3] = planDemo(3, "t").nodes;
  const { bgp, ...node1Rest } = node1.spec;
  assert.deepEqual(node1Rest, defaults, "node 1 is the default spec, plus BGP");
  assert.equal(bgp?.asn, node1.asn);
  assert.deepEqual(
    [node2.spec.cidr6, node2.spec.cidr4, node3.spec.cidr6, node3.spec.cidr4],
    ["fd00:f10c:0:2::/64", "10.244.2.0/24", "fd00:f10c:0:3::/64", "10.244.3.0/24"],
  );
  for (const node of [node2, node3]) {
    assert.deepEqual(
      { ...node.spec, cidr6: undefined, cidr4: undefined, bgp: undefined },
      { ...defaults, cidr6: undefined, cidr4: undefined, bgp: undefined },
      "only the CIDRs and BGP differ from the default",
    );
  }
});

Deno.test("nthBlock: moves a prefix up by whole blocks of its own size", () => {
  assert.equal(nthBlock("10.244.1.0/24", 0), "10.244.1.0/24");
  assert.equal(nthBlock("10.244.1.0/24", 8), "10.244.9.0/24");
  assert.equal(nthBlock("10.244.255.0/24", 1), "10.245.0.0/24", "carries into the next octet");
  assert.equal(nthBlock("fd00:f10c:0:1::/64", 2), "fd00:f10c:0:3::/64");
});

Deno.test("planDemo: node count and tag are checked", () => {
  assert.equal(planDemo(2, "x").nodes.length, 2);
  assert.equal(planDemo(MAX_DEMO_NODES, "x").nodes.length, MAX_DEMO_NODES);
  for (const n of [0, 1, MAX_DEMO_NODES + 1, 2.5, NaN]) {
    assert.throws(() => planDemo(n, "x"), RangeError, String(n));
  }
  for (const tag of ["", "UPPER", "has-dash", "toolongtag"]) {
    assert.throws(() => planDemo(2, tag), RangeError, tag);
  }
});
