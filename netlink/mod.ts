/**
 * flock's rtnetlink library: a handle bound to a network namespace, and one
 * module per object kind. It knows nothing of Kubernetes or CNI.
 *
 * @module
 */

export * from "./consts.ts";
export * from "./errors.ts";
export { Handle, type QueuedRequest, type Requester } from "./handle.ts";
export { RequestBatch } from "./batch.ts";
export { formatMac } from "./wire.ts";
export * from "./ip.ts";
export * from "./link.ts";
export * from "./addr.ts";
export * from "./route.ts";
export * from "./neightbl.ts";
export { netnsIdOf, netnsIdOfFd } from "./nsid.ts";
export { AddressEvents } from "./addr_events.ts";
