/**
 * Which network namespaces may hold another pod's flock interface, in memory, so that a new
 * pod's ADD skips the kernel's check (a link dump of its netns, ~0.12 ms) when its netns is none
 * of them. A netns is known by its nsfs identity (st_dev/st_ino of an fd of it, a few µs): a path
 * can be reused and two paths can name one netns, the identity cannot lie either way.
 *
 * The rule that keeps the skip exactly as strong as the kernel's check: every netns where a
 * record in the store may have its veth's other end carries that record's key here, from before
 * the veth is made (a setup registers the netns it opened first) until the record leaves the
 * store. A record whose other end may live in a netns this cannot name (after a restart: its
 * path gone or reused while the veth lives on) is "unknown", and while one is in the store every
 * ADD asks the kernel. A hit may be stale (a netns that died and whose inode number the kernel
 * gave to a new one): it only sends that ADD to the kernel's check.
 *
 * @module
 */

import { fileIdentityOfFd } from "../netlink/ffi.ts";

/** A network namespace's nsfs identity: `major:minor:inode`. */
export type NetnsIdentity = string;

/**
 * The identity of the namespace the open fd `fd` refers to: statx(2) of the fd, ~1 µs (a
 * `Deno.statSync` of /proc/self/fd/N costs 5 µs in a loop and ~70 µs as one cold call).
 */
export function netnsIdentityOfFd(fd: number): NetnsIdentity {
  return fileIdentityOfFd(fd);
}

/** The netns identities of the records in the store, by record key (`containerId/ifname`). */
export class NetnsIdentities {
  readonly #byIdentity = new Map<NetnsIdentity, Set<string>>();
  readonly #byRecord = new Map<string, Set<NetnsIdentity>>();
  readonly #unknown = new Set<string>();

  /** Notes that the record `key` may have its veth's other end in the netns `identity`. */
  add(key: string, identity: NetnsIdentity): void {
    let keys = this.#byIdentity.get(identity);
    if (!keys) this.#byIdentity.set(identity, keys = new Set());
    keys.add(key);
    let identities = this.#byRecord.get(key);
    if (!identities) this.#byRecord.set(key, identities = new Set());
    identities.add(identity);
  }

  /** Notes that the record `key`'s veth may have its other end in a netns nobody can name. */
  addUnknown(key: string): void {
    this.#unknown.add(key);
  }

  /**
   * The record `key`'s veth was just found with its other end in the netns `identity` (a
   * successful ADD retry or CHECK): noted there, and no longer unknown, so that ADDs into other
   * netns stop asking the kernel on its account.
   */
  located(key: string, identity: NetnsIdentity): void {
    this.add(key, identity);
    this.#unknown.delete(key);
  }

  /**
   * The record `key`'s veth was found gone (or with its other end on the node): it has nothing in
   * any pod netns, and ADDs stop asking the kernel on its account. A setup that makes its veth
   * again registers the netns it opened first, as for any record.
   */
  noLongerUnknown(key: string): void {
    this.#unknown.delete(key);
  }

  /** The records whose veth may have its other end in a netns nobody can name. */
  unknownKeys(): string[] {
    return [...this.#unknown];
  }

  /** Whether the record `key`'s veth may have its other end in a netns nobody can name. */
  isUnknown(key: string): boolean {
    return this.#unknown.has(key);
  }

  /** The netns where the record `key` may have its veth's other end, as far as they are known. */
  identitiesOf(key: string): NetnsIdentity[] {
    return [...this.#byRecord.get(key) ?? []];
  }

  /** The record `key` left the store: its netns hold nothing of it any more. */
  forget(key: string): void {
    this.#unknown.delete(key);
    const identities = this.#byRecord.get(key);
    if (!identities) return;
    this.#byRecord.delete(key);
    for (const identity of identities) {
      const keys = this.#byIdentity.get(identity);
      keys?.delete(key);
      if (keys?.size === 0) this.#byIdentity.delete(identity);
    }
  }

  /**
   * Whether a record other than `self` may have a flock interface in the netns `identity` (then
   * the kernel must be asked). Records `inStore` denies are forgotten first: a deletion this was
   * not told of can only cost a kernel check, never skip one.
   */
  mayHoldOther(identity: NetnsIdentity, self: string, inStore: (key: string) => boolean): boolean {
    if (this.#unknown.size > 0) {
      for (const key of [...this.#unknown]) if (!inStore(key)) this.forget(key);
      if (this.#unknown.size > (this.#unknown.has(self) ? 1 : 0)) return true;
    }
    const keys = this.#byIdentity.get(identity);
    if (!keys) return false;
    for (const key of [...keys]) {
      if (key === self) continue;
      if (inStore(key)) return true;
      this.forget(key);
    }
    return false;
  }

  /** How many records have an identity or are unknown (for tests and leak checks). */
  get records(): number {
    return new Set([...this.#byRecord.keys(), ...this.#unknown]).size;
  }
}
