/**
 * A plain layer-2 fabric for tests: a namespace holding a bridge `br0` that node uplinks join,
 * with no router on it (for a BGP node mesh, where the nodes peer with each other directly).
 * {@linkcode GobgpTor} builds on it, adding a BGP speaker; both fit `startBgpNode`.
 *
 * ```ts
 * await using fabric = await Fabric.start();
 * const port = fabric.nextPortName();   // pass as createNode's uplinkIfName, uplink fabric.ns
 * await fabric.attach(port);
 * ```
 *
 * @module
 */

import { TestNamespace } from "./netns.ts";

/** A bridge namespace; removed (with every port still on it) by {@linkcode remove}. */
export class Fabric implements AsyncDisposable {
  #ports = 0;

  private constructor(readonly ns: TestNamespace) {}

  /** Creates the namespace and an up `br0` with no address. */
  static async start(prefix = "flk-fab"): Promise<Fabric> {
    const ns = await TestNamespace.create(prefix);
    try {
      await ns.ip(["link", "add", "br0", "type", "bridge"]);
      await ns.ip(["link", "set", "br0", "up"]);
      return new Fabric(ns);
    } catch (err) {
      await ns.remove();
      throw err;
    }
  }

  /** A fresh name for a veth end that joins br0 (pass as `uplinkIfName`). */
  nextPortName(): string {
    return `port${++this.#ports}`;
  }

  /** Enslaves a veth end (already in the fabric namespace) to br0. */
  async attach(ifname: string): Promise<void> {
    await this.ns.ip(["link", "set", ifname, "master", "br0", "up"]);
  }

  /** Deletes the namespace. */
  remove(): Promise<void> {
    return this.ns.remove();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.remove();
  }
}
