/**
 * What an operator meets through the real exec path and a real agent: a network name off the
 * CNI spec's pattern is refused before anything is allocated; CHECK compares the prevResult
 * pod interface's sandbox with CNI_NETNS (by the namespace it names, so another path to the same
 * netns passes); `flock status` names each pod's network.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, run } from "../helpers/exec.ts";

Deno.test({
  name:
    "cni polish: bad network name is code 7 with nothing allocated; CHECK's sandbox; status network",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:9c::/64", cidr4: "10.159.0.0/24" },
    });
    await using a = await TestNamespace.create("flk-pol-a");
    await using b = await TestNamespace.create("flk-pol-b");
    const tmp = await Deno.makeTempDir({ prefix: "flock-polish-" });
    try {
      // A name off ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$: code 7 naming the field, no interface made.
      const netconf = JSON.parse(await node.netconf());
      for (const name of ["bad name", "-flock", "../etc"]) {
        const r = await node.cni("ADD", {
          containerId: "ctr-badname",
          netns: a.path,
          stdin: JSON.stringify({ ...netconf, name }),
        });
        assert.equal(r.code, 1, r.stdout);
        assert.equal(r.json?.code, 7, r.stdout);
        assert.match(r.json.msg, /name is invalid/);
        assert.equal(r.json.details, JSON.stringify(name));
      }
      assert.deepEqual(await node.flockLinks(), []);

      const added = await node.cni("ADD", { containerId: "ctr-pol", netns: a.path });
      assert.equal(added.code, 0, added.stdout + added.stderr);
      const result = added.json;
      const check = (prevResult: unknown) =>
        node.cni("CHECK", { containerId: "ctr-pol", netns: a.path, extraConfig: { prevResult } });
      const withSandbox = (sandbox: string) => ({
        ...result,
        interfaces: result.interfaces.map((i: { sandbox?: string }) =>
          i.sandbox === undefined ? i : { ...i, sandbox }
        ),
      });
      const same = await check(result);
      assert.equal(same.code, 0, same.stdout);
      // Another path to the same netns (as /var/run/netns/x is to /run/netns/x) is the same.
      const link = join(tmp, "netns-link");
      await Deno.symlink(a.path, link);
      const samePod = await check(withSandbox(link));
      assert.equal(samePod.code, 0, samePod.stdout);
      // prevResult says the interface is in another pod's netns: CHECK fails naming both.
      const moved = await check(withSandbox(b.path));
      assert.equal(moved.code, 1, moved.stdout);
      assert.equal(moved.json?.code, 101, moved.stdout);
      assert.ok(moved.json.details.includes(`sandbox ${b.path}`), moved.json.details);
      assert.ok(moved.json.details.includes(`CNI_NETNS ${a.path}`), moved.json.details);
      const gone = await check(withSandbox("/run/netns/flk-pol-gone"));
      assert.equal(gone.json?.code, 101, gone.stdout);
      assert.match(gone.json.details, /flk-pol-gone, which does not exist/);

      // flock status: the pod's network, as JSON and in the table's last column.
      const status = (...args: string[]) =>
        run([node.executable, "status", "--socket", node.socketPath, ...args], {
          timeoutMs: 30_000,
        });
      const json = JSON.parse((await status("--json")).stdout);
      assert.equal(json.attachments.length, 1);
      assert.equal(json.attachments[0].network, node.networkName);
      const table = (await status()).stdout;
      assert.match(table, /STATE +NETWORK$/m);
      assert.match(
        table,
        new RegExp(`^ {2}- +ctr-pol +eth0 .* committed +${node.networkName}$`, "m"),
      );

      const del = await node.cni("DEL", { containerId: "ctr-pol", netns: a.path });
      assert.equal(del.code, 0, del.stdout);
      await node.settled();
      assert.deepEqual(await node.flockLinks(), []);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
