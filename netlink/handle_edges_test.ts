/**
 * Handle against the kernel's awkward answers, each made to happen for real inside a throwaway
 * namespace: a dump the kernel stops with an errno in NLMSG_DONE, a reply datagram bigger than
 * the receive buffer, a receive queue overflow (ENOBUFS), dumps interrupted by concurrent changes.
 * After each, the same handle must still answer correctly.
 */

import assert from "node:assert/strict";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import {
  addVeth,
  AF_INET,
  AF_INET6,
  DumpIncompleteError,
  DumpInterruptedError,
  getLinkByName,
  type Link,
  listAddresses,
  listLinks,
  listRoutes,
  NetlinkError,
  NetlinkSocketError,
  RTM_GETROUTE,
  RTM_SETLINK,
  setLinkUp,
} from "./mod.ts";
import { Handle, type QueuedRequest } from "./handle.ts";
import { ifinfomsg, rtmsg } from "./wire.ts";

const ENOBUFS = 105;

/** Writes an `ip -batch` file into a temp dir that the caller removes. */
async function batchFile(dir: string, lines: string[]): Promise<string> {
  const path = `${dir}/batch`;
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  return path;
}

/** Link names as `ip` sees them, for cross-checking the handle's dump. */
async function ipLinkNames(ns: TestNamespace): Promise<string[]> {
  const links = await ns.ipJson<{ ifname: string }[]>(["link", "show"]);
  return links.map((l) => l.ifname).sort();
}

Deno.test({
  name:
    "dump stopped by the kernel (errno in NLMSG_DONE) throws, naming the request; the handle goes on",
  ...ROOT_ONLY,
  fn: async () => {
    await using ns = await TestNamespace.create("flk-nle");
    using h = Handle.forNetns(ns.path);
    // A strict-checked IPv6 route dump with rtm_dst_len set: the dump callback refuses the
    // header, and the kernel reports it in NLMSG_DONE, not in an NLMSG_ERROR.
    const bad = h.message(RTM_GETROUTE).raw(
      rtmsg({ family: AF_INET6, dstLen: 64, table: 0, protocol: 0, scope: 0, type: 0 }),
    );
    assert.throws(
      () => h.dump(bad, "list routes"),
      (e: unknown) =>
        e instanceof DumpIncompleteError && e instanceof NetlinkError && e.errno === 22 &&
        /^list routes: the kernel stopped the dump part-way: Invalid argument/.test(e.message) &&
        /kernel says: Invalid values in header for FIB dump request/.test(e.message),
    );
    assert.deepEqual(listLinks(h).map((l) => l.name), ["lo"]);
  },
});

Deno.test({
  name:
    "listRoutes of a table that does not exist yet (ENOENT in NLMSG_DONE) is empty, not an error",
  ...ROOT_ONLY,
  fn: async () => {
    await using ns = await TestNamespace.create("flk-nle");
    using h = Handle.forNetns(ns.path);
    // A fresh namespace has no IPv4 main table until its first IPv4 route.
    assert.deepEqual(listRoutes(h, { family: AF_INET, table: 254 }), []);
    assert.deepEqual(listRoutes(h, { family: AF_INET6, table: 1234 }), []);
    await ns.ip(["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    await ns.ip(["link", "set", "d0", "up"]);
    await ns.ip(["route", "add", "blackhole", "10.1.0.0/16", "proto", "201"]);
    assert.deepEqual(
      listRoutes(h, { family: AF_INET, table: 254, protocol: 201 }).map((r) => r.type),
      [6], // RTN_BLACKHOLE
    );
  },
});

Deno.test({
  name: "listAddresses of a link that is gone (ENODEV in NLMSG_DONE) is empty, not an error",
  ...ROOT_ONLY,
  fn: async () => {
    await using ns = await TestNamespace.create("flk-nle");
    using h = Handle.forNetns(ns.path);
    for (const family of [undefined, AF_INET, AF_INET6] as const) {
      assert.deepEqual(listAddresses(h, { family, index: 4242 }), []);
    }
    assert.equal(listAddresses(h, { family: AF_INET, index: 1 }).length, 1); // 127.0.0.1
  },
});

Deno.test({
  name: "a dump datagram above 64 KiB (a link with 496 altnames) is read whole, and so is the next",
  ...ROOT_ONLY,
  fn: async () => {
    await using ns = await TestNamespace.create("flk-nle");
    const dir = await Deno.makeTempDir({ prefix: "flk-nle-" });
    try {
      using h = Handle.forNetns(ns.path);
      addVeth(h, { name: "big", peerName: "bigp" });
      // Altnames until the kernel refuses more (its limit keeps one link message below 64 KiB),
      // then small links after it: one dump datagram holds them all, ~70 KiB.
      const name = (i: number) => `${"a".repeat(100)}${String(i).padStart(4, "0")}`;
      const lines = Array.from(
        { length: 600 },
        (_, i) => `link property add dev big altname ${name(i)}`,
      );
      await ns.exec(["ip", "-force", "-batch", await batchFile(dir, lines)]);
      for (let i = 0; i < 30; i++) addVeth(h, { name: `s${i}a`, peerName: `s${i}b` });
      assert.equal(h.receiveBufferBytes, 64 * 1024);

      const expected = await ipLinkNames(ns);
      assert.equal(expected.length, 63);
      for (let round = 0; round < 2; round++) {
        // Before: "netlink: malformed message (length 1124 at offset 64524)", then EBUSY.
        const links = listLinks(h);
        assert.deepEqual(links.map((l) => l.name).sort(), expected);
      }
      assert.ok(h.receiveBufferBytes > 64 * 1024, `buffer grew to ${h.receiveBufferBytes}`);
      assert.equal(getLinkByName(h, "big")?.name, "big");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "replies bigger than a small receive buffer: GET and dump are asked again with a grown one",
  ...ROOT_ONLY,
  fn: async () => {
    await using ns = await TestNamespace.create("flk-nle");
    using h = Handle.forNetns(ns.path, { receiveBufferBytes: 256 });
    // One RTM_NEWLINK reply is > 1 KiB: the GET's datagram does not fit 256 bytes.
    const lo: Link | undefined = getLinkByName(h, "lo");
    assert.equal(lo?.index, 1);
    assert.ok(h.receiveBufferBytes >= 1024, `buffer grew to ${h.receiveBufferBytes}`);
    for (let i = 0; i < 20; i++) addVeth(h, { name: `t${i}a`, peerName: `t${i}b` });
    assert.deepEqual(listLinks(h).map((l) => l.name).sort(), await ipLinkNames(ns));
  },
});

Deno.test({
  name:
    "receive queue overflow (ENOBUFS) during a batch is an error naming the batch; the handle goes on",
  ...ROOT_ONLY,
  fn: async () => {
    await using ns = await TestNamespace.create("flk-nle");
    // The smallest queue the kernel allows holds a handful of ACKs; 500 requests in one datagram
    // are all run before we read, so most ACKs are dropped.
    using h = Handle.forNetns(ns.path, { receiveQueueBytes: 0 });
    const requests: QueuedRequest[] = Array.from({ length: 500 }, (_, i) => ({
      msg: h.message(RTM_SETLINK).raw(ifinfomsg(0, 1, 1, 1)),
      operation: `set lo up #${i}`,
    }));
    assert.throws(
      () => h.executeAll(requests),
      (e: unknown) =>
        e instanceof NetlinkSocketError && e.errno === ENOBUFS &&
        /^batch of 500 requests \(first: set lo up #0\): .*receive queue overflowed/.test(
          e.message,
        ),
    );
    setLinkUp(h, 1);
    assert.deepEqual(listLinks(h).map((l) => l.name), ["lo"]);
  },
});

Deno.test({
  name: "IPv6 address dumps interrupted by concurrent changes: retried, then DumpInterruptedError",
  ...ROOT_ONLY,
  fn: async () => {
    await using ns = await TestNamespace.create("flk-nle");
    const dir = await Deno.makeTempDir({ prefix: "flk-nle-" });
    let churn: Deno.ChildProcess | undefined;
    try {
      const present = Array.from(
        { length: 3000 },
        (_, i) => `addr add fd03::${i.toString(16)}/128 dev lo nodad`,
      );
      await ns.ip(["-batch", await batchFile(dir, present)]);
      const changes: string[] = [];
      for (let i = 0; i < 100_000; i++) {
        changes.push(`addr add fd04::1/128 dev lo nodad`, `addr del fd04::1/128 dev lo`);
      }
      const churnFile = `${dir}/churn`;
      await Deno.writeTextFile(churnFile, changes.join("\n") + "\n");
      // A small buffer makes the kernel cut the dump into ~60 datagrams: 60 chances per dump for
      // a change (each bumps the namespace's address generation) to land between two of them.
      using h = Handle.forNetns(ns.path, { receiveBufferBytes: 4096 });
      const quiet = listAddresses(h, { family: AF_INET6 });
      assert.equal(quiet.length, 3001); // and ::1

      churn = new Deno.Command("ip", {
        args: ["-n", ns.name, "-force", "-batch", churnFile],
        stdout: "null",
        stderr: "null",
      }).spawn();
      let interrupted: DumpInterruptedError | undefined;
      // Bounded by time, not by count: on a loaded machine the churn may get little CPU.
      const deadline = Date.now() + 10_000;
      while (!interrupted && Date.now() < deadline) {
        try {
          const seen = listAddresses(h, { family: AF_INET6 }).length;
          assert.ok(seen === 3001 || seen === 3002, `a consistent dump: ${seen} addresses`);
        } catch (e) {
          if (!(e instanceof DumpInterruptedError)) throw e;
          interrupted = e;
        }
      }
      assert.ok(interrupted, "10 s of dumps under churn, none interrupted 6 times in a row");
      assert.equal(
        interrupted.message,
        "list addresses: RTM_GETADDR dump interrupted 6 times in a row " +
          "(the table kept changing while it was read)",
      );
      assert.equal(interrupted.attempts, 6);
      churn.kill();
      await churn.status;
      churn = undefined;
      assert.ok(listAddresses(h, { family: AF_INET6 }).length >= 3001);
    } finally {
      if (churn) {
        churn.kill();
        await churn.status;
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});
