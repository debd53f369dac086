/**
 * Small bird.conf texts for tests that drive a real BIRD through BirdControl: rendered by the
 * product's renderer, so BIRD checks what flock would hand it.
 *
 * @module
 */

import { renderBirdConfig } from "../../bird/config.ts";

/** A config without sessions announcing `cidr6` (router id 10.9.9.9). */
export function smallBirdConfig(cidr6: string): string {
  return renderBirdConfig({
    routerId: "10.9.9.9",
    cidrs: [cidr6],
    anycastCIDRs: [],
    routeProtocol: 201,
  });
}

/** A session to a ToR: visible in `show protocols` (as `peer_…`) once BIRD runs this config. */
export function birdConfigWithPeer(): string {
  return renderBirdConfig({
    routerId: "10.9.9.9",
    cidrs: ["fd00:2::/64"],
    anycastCIDRs: [],
    routeProtocol: 201,
    asn: 64512,
    peers: [{ address: "fd00:9::1", asn: 65000 }],
  });
}
