import assert from "node:assert/strict";
import { vethMacs } from "./veth_mac.ts";
import { formatMac } from "../netlink/mod.ts";

const ID = "3f1c9a7e5b2d4c6f8a0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";

function isLocalUnicast(mac: Uint8Array): boolean {
  return mac.length === 6 && (mac[0] & 0x01) === 0 && (mac[0] & 0x02) === 2;
}

Deno.test("vethMacs: the same attachment always gets the same MACs", () => {
  const first = vethMacs(ID, "eth0");
  const again = vethMacs(ID, "eth0");
  assert.equal(formatMac(again.pod), formatMac(first.pod));
  assert.equal(formatMac(again.host), formatMac(first.host));
});

Deno.test("vethMacs: locally administered unicast, the two ends distinct", () => {
  for (let i = 0; i < 2000; i++) {
    const { pod, host } = vethMacs(`pod-${i}`, i % 2 ? "eth0" : "net1");
    assert.ok(isLocalUnicast(pod), `pod ${formatMac(pod)}`);
    assert.ok(isLocalUnicast(host), `host ${formatMac(host)}`);
    assert.notEqual(formatMac(pod), formatMac(host));
  }
});

Deno.test("vethMacs: another container or another interface of it gets other MACs", () => {
  const macs = [
    vethMacs(ID, "eth0"),
    vethMacs(ID, "net1"),
    vethMacs(ID.replace(/a$/, "b"), "eth0"),
  ].flatMap(({ pod, host }) => [formatMac(pod), formatMac(host)]);
  assert.equal(new Set(macs).size, macs.length, macs.join(" "));
});

Deno.test("vethMacs: all 46 free bits vary across containers", () => {
  let seen = 0n;
  let varying = 0n;
  const macs = new Set<string>();
  for (let i = 0; i < 4096; i++) {
    const { pod } = vethMacs(`c${i}`, "eth0");
    macs.add(formatMac(pod));
    const value = pod.reduce((v, byte) => (v << 8n) | BigInt(byte), 0n);
    if (i > 0) varying |= value ^ seen;
    seen = value;
  }
  // The first octet's two low bits are fixed (unicast, local); the other 46 all change.
  assert.equal(varying, 0xfcff_ffff_ffffn);
  assert.equal(macs.size, 4096, "no two of 4,096 containers share a pod MAC");
});
