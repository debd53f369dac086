/**
 * Netns ids (nsid.ts) asked by path and by an open fd agree, and opening a path that may be gone
 * (ffi.ts openPathOrNone) answers undefined instead of throwing.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { createNode } from "../tests/helpers/netns.ts";
import { closeFd, O_CLOEXEC, O_NONBLOCK, O_RDONLY, openPathOrNone } from "./ffi.ts";
import { getLinkByName, Handle, netnsIdOf, netnsIdOfFd } from "./mod.ts";

Deno.test("openPathOrNone: a missing path is undefined, an existing one an fd", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flk-open-" });
  try {
    assert.equal(openPathOrNone(join(dir, "gone")), undefined);
    await Deno.writeTextFile(join(dir, "here"), "");
    const fd = openPathOrNone(join(dir, "here"), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    assert.ok(fd !== undefined && fd >= 0, `fd ${fd}`);
    closeFd(fd);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "netnsIdOfFd: the id the node knows a netns by, as netnsIdOf of its path says",
  ...ROOT_ONLY,
  async fn() {
    await using fixture = await createNode({ prefix: "flk-nsid" });
    using node = Handle.forNetns(fixture.node.path);
    // eth0's other end is in the uplink netns: the node has an id for it.
    const wanted = getLinkByName(node, "eth0")?.peerNetnsId;
    assert.notEqual(wanted, undefined);
    assert.equal(netnsIdOf(node, fixture.uplink.path), wanted);
    const fd = openPathOrNone(fixture.uplink.path, O_RDONLY | O_CLOEXEC)!;
    try {
      assert.equal(netnsIdOfFd(node, fd, fixture.uplink.path), wanted);
    } finally {
      closeFd(fd);
    }
    assert.equal(netnsIdOf(node, join(fixture.uplink.path, "gone")), undefined);
  },
});
