import assert from "node:assert/strict";
import { birdInputFor, routerIdFor } from "./routing.ts";
import { parseNodeConfig } from "./config.ts";
import { renderBirdConfig } from "../bird/config.ts";

const plain = parseNodeConfig({ cidr6: "fd00:1::/64", bgp: { asn: 64512, nodeMesh: true } }, "t");
const configured = parseNodeConfig(
  { cidr6: "fd00:1::/64", bgp: { asn: 64512, routerID: "192.0.2.7" } },
  "t",
);

Deno.test("routerIdFor: bgp.routerID, else the node's first IPv4 address, else a name hash", () => {
  assert.deepEqual(routerIdFor(configured, "node-1", ["10.0.0.11"]), {
    id: "192.0.2.7",
    source: "bgp.routerID",
  });
  // kubelet may list the IPv6 InternalIP first: the first IPv4 one is taken all the same.
  assert.deepEqual(routerIdFor(plain, "node-1", ["fd00:a::11", "10.0.0.11", "10.0.0.99"]), {
    id: "10.0.0.11",
    source: "nodeInternalIP",
  });
  // IPv6-only node (or standalone mode, which has no Node object): FNV-1a-32 of the name, the
  // same value as before cluster mode knew better (pinned: a restart must not change it).
  for (const addresses of [undefined, [], ["fd00:a::11"], ["0.0.0.0", "not an address"]]) {
    assert.deepEqual(routerIdFor(plain, "node-1", addresses), {
      id: "84.196.51.131",
      source: "nodeNameHash",
    });
  }
  assert.equal(routerIdFor(plain, "flk-mesh-1").id, "146.66.89.16");
});

Deno.test("birdInputFor: bird.conf's router id follows the node's addresses", () => {
  const conf = (addresses?: string[]) =>
    renderBirdConfig(birdInputFor(plain, "node-1", [], addresses));
  assert.match(conf(["fd00:a::11", "10.0.0.11"]), /^router id 10\.0\.0\.11;$/m);
  assert.match(conf(), /^router id 84\.196\.51\.131;$/m);
  assert.match(
    renderBirdConfig(birdInputFor(configured, "node-1", [], ["10.0.0.11"])),
    /^router id 192\.0\.2\.7;$/m,
  );
});

Deno.test("birdInputFor: a Secret's password is rendered; a peer without one is left out", () => {
  const node = parseNodeConfig(
    {
      cidr6: "fd00:1::/64",
      bgp: {
        asn: 64512,
        peers: [
          { address: "fd00:a::1", asn: 65000, passwordSecretRef: { name: "bgp", key: "tor-1" } },
          { address: "fd00:a::2", asn: 65000, passwordSecretRef: { name: "bgp", key: "tor-2" } },
          { address: "fd00:a::3", asn: 65000, password: "inline" },
        ],
      },
    },
    "t",
    { secretRefs: true },
  );
  const input = birdInputFor(node, "node-1", [], [], new Map([["bgp/tor-1", "from-secret"]]));
  assert.deepEqual(input.peers, [
    { address: "fd00:a::1", asn: 65000, password: "from-secret" },
    { address: "fd00:a::3", asn: 65000, password: "inline" },
  ]);
  const text = renderBirdConfig(input);
  assert.match(text, /password "from-secret";/);
  assert.doesNotMatch(text, /fd00:a::2/);
  assert.doesNotMatch(text, /password "";/);
});
