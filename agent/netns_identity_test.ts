import assert from "node:assert/strict";
import { closeFd, O_CLOEXEC, O_RDONLY, openPath } from "../netlink/ffi.ts";
import { Handle } from "../netlink/handle.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { linkVeth, TestNamespace } from "../tests/helpers/netns.ts";
import { Datapath } from "./datapath.ts";
import { NetnsIdentities, netnsIdentityOfFd } from "./netns_identity.ts";

const everyKey = () => true;

Deno.test("netns identities: a netns nobody registered holds nothing; a registered one does", () => {
  const ids = new NetnsIdentities();
  assert.equal(ids.mayHoldOther("1:10", "a", everyKey), false);
  ids.add("a", "1:10");
  assert.equal(ids.mayHoldOther("1:10", "b", everyKey), true);
  assert.equal(ids.mayHoldOther("1:11", "b", everyKey), false);
  // The record's own registration (a retry into its netns) does not count.
  assert.equal(ids.mayHoldOther("1:10", "a", everyKey), false);
});

Deno.test("netns identities: a retry into a new netns keeps the old one until the record goes", () => {
  const ids = new NetnsIdentities();
  ids.add("a", "1:10");
  ids.add("a", "1:20");
  assert.equal(ids.mayHoldOther("1:10", "b", everyKey), true);
  assert.equal(ids.mayHoldOther("1:20", "b", everyKey), true);
  ids.forget("a");
  assert.equal(ids.mayHoldOther("1:10", "b", everyKey), false);
  assert.equal(ids.mayHoldOther("1:20", "b", everyKey), false);
  assert.equal(ids.records, 0);
});

Deno.test("netns identities: two records in one netns: forgetting one keeps the other's", () => {
  const ids = new NetnsIdentities();
  ids.add("a", "1:10");
  ids.add("b", "1:10");
  ids.forget("a");
  assert.equal(ids.mayHoldOther("1:10", "c", everyKey), true);
  assert.equal(ids.mayHoldOther("1:10", "b", everyKey), false);
});

Deno.test("netns identities: a record no longer in the store is forgotten on a hit", () => {
  const ids = new NetnsIdentities();
  ids.add("gone", "1:10");
  ids.add("live", "1:20");
  const inStore = (key: string) => key === "live";
  assert.equal(ids.mayHoldOther("1:10", "new", inStore), false);
  assert.equal(ids.records, 1);
  assert.equal(ids.mayHoldOther("1:20", "new", inStore), true);
});

Deno.test("netns identities: an unknown record sends every other ADD to the kernel", () => {
  const ids = new NetnsIdentities();
  ids.addUnknown("lost");
  assert.equal(ids.mayHoldOther("1:10", "new", everyKey), true);
  // Its own retry is not held up by itself alone.
  assert.equal(ids.mayHoldOther("1:10", "lost", everyKey), false);
  ids.forget("lost");
  assert.equal(ids.mayHoldOther("1:10", "new", everyKey), false);
  // Left the store without being forgotten: dropped at the next ADD.
  ids.addUnknown("lost2");
  assert.equal(ids.mayHoldOther("1:10", "new", (key) => key !== "lost2"), false);
  assert.equal(ids.records, 0);
});

function identityOfPath(path: string): string {
  const fd = openPath(path, O_RDONLY | O_CLOEXEC);
  try {
    return netnsIdentityOfFd(fd);
  } finally {
    closeFd(fd);
  }
}

Deno.test({
  name: "netns identity: two paths naming one netns agree, two netns differ",
  ...ROOT_ONLY,
  async fn() {
    await using a = await TestNamespace.create("flk-nsid");
    await using b = await TestNamespace.create("flk-nsid");
    const sleeper = new Deno.Command("ip", {
      args: ["netns", "exec", a.name, "sleep", "30"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const proc = `/proc/${sleeper.pid}/ns/net`;
      // `ip netns exec` enters the netns before it execs sleep: wait (bounded) until it has.
      for (let i = 0; i < 100 && identityOfPath(proc) !== identityOfPath(a.path); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(identityOfPath(proc), identityOfPath(a.path));
      assert.notEqual(identityOfPath(a.path), identityOfPath(b.path));
    } finally {
      sleeper.kill();
      await sleeper.status;
    }
  },
});

Deno.test({
  name: "netns identity: locatePeerNetns finds a host veth's other end, or says it cannot",
  ...ROOT_ONLY,
  async fn() {
    await using node = await TestNamespace.create("flk-nsid");
    await using pod = await TestNamespace.create("flk-nsid");
    await using other = await TestNamespace.create("flk-nsid");
    await linkVeth(node, pod, "flk0123abcd", "eth0");
    const handle = Handle.forNetns(node.path);
    try {
      const datapath = new Datapath(handle);
      assert.deepEqual(datapath.locatePeerNetns("flk0123abcd", pod.path), {
        identity: identityOfPath(pod.path),
        unknown: false,
      });
      // The path names another netns (reused): where the other end is, nobody can say.
      assert.deepEqual(datapath.locatePeerNetns("flk0123abcd", other.path), { unknown: true });
      assert.deepEqual(datapath.locatePeerNetns("flk0123abcd", "/nonexistent/ns"), {
        unknown: true,
      });
      // No such veth: it holds nothing anywhere.
      assert.deepEqual(datapath.locatePeerNetns("flk9999eeee", pod.path), { unknown: false });
      // From one dump of the node's links, the same answers.
      const nodeLinks = datapath.nodeLinksByName();
      assert.deepEqual(datapath.locatePeerNetns("flk0123abcd", pod.path, nodeLinks), {
        identity: identityOfPath(pod.path),
        unknown: false,
      });
      assert.deepEqual(datapath.locatePeerNetns("flk0123abcd", other.path, nodeLinks), {
        unknown: true,
      });
      assert.deepEqual(datapath.locatePeerNetns("flk9999eeee", pod.path, nodeLinks), {
        unknown: false,
      });
    } finally {
      handle.close();
    }
  },
});

Deno.test("netns identities: an unknown record located in a netns is known there again", () => {
  const ids = new NetnsIdentities();
  ids.addUnknown("lost");
  assert.equal(ids.isUnknown("lost"), true);
  assert.deepEqual(ids.identitiesOf("lost"), []);
  ids.located("lost", "1:10");
  assert.equal(ids.isUnknown("lost"), false);
  assert.deepEqual(ids.identitiesOf("lost"), ["1:10"]);
  // Other netns no longer need the kernel on its account; its own one still does.
  assert.equal(ids.mayHoldOther("1:20", "new", everyKey), false);
  assert.equal(ids.mayHoldOther("1:10", "new", everyKey), true);
  ids.forget("lost");
  assert.deepEqual(ids.identitiesOf("lost"), []);
  assert.equal(ids.records, 0);
});

Deno.test("netns identities: an unknown record whose veth is gone no longer sends ADDs to the kernel", () => {
  const ids = new NetnsIdentities();
  ids.addUnknown("gone");
  ids.addUnknown("lost");
  assert.deepEqual(ids.unknownKeys().sort(), ["gone", "lost"]);
  ids.noLongerUnknown("gone");
  assert.deepEqual(ids.unknownKeys(), ["lost"]);
  assert.equal(ids.mayHoldOther("1:20", "new", everyKey), true, "lost is still unknown");
  ids.noLongerUnknown("lost");
  assert.equal(ids.mayHoldOther("1:20", "new", everyKey), false);
  assert.deepEqual(ids.identitiesOf("gone"), []);
});
