import assert from "node:assert/strict";
import { DEMO_ANYCAST, MAX_DEMO_NODES, nodeConfigObject, planDemo } from "./demo_plan.ts";
import { parseNodeConfig } from "./config.ts";
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
