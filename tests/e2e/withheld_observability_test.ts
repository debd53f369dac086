/**
 * An operator sees withheld addresses (agent/withheld.ts) without reading the store: the
 * `flock_withheld_addresses` gauge on the agent's metrics endpoint and a "Withheld addresses"
 * part in `flock status` (JSON and text), current after the withholding DEL, after a restart
 * (loaded from the store), while the veth they are held through is down and once it is up again
 * (still withheld), and once they are given back (their route deleted by hand). Before, only the start-up reconcile's problem lines named them.
 */

import assert from "node:assert/strict";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { flockStatusJson } from "../helpers/status_probe.ts";
import { withheldIps, withholdThroughB } from "../helpers/withheld_fixture.ts";
import { RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";

/** The agent's sweep period in this test (the product's is 30 s). */
const SWEEP_MS = 100;

/** `[ipv6, ipv4]` of `flock_withheld_addresses`, scraped from the agent's metrics endpoint. */
async function withheldGauge(node: FlockNode): Promise<[number, number]> {
  const { status, body } = await node.httpGet("/metrics");
  assert.equal(status, 200);
  const value = (family: string) => {
    const m = body.match(
      new RegExp(`^flock_withheld_addresses\\{family="${family}"\\} (\\S+)$`, "m"),
    );
    assert.ok(m, `no flock_withheld_addresses{family="${family}"} in the scrape`);
    return Number(m[1]);
  };
  return [value("ipv6"), value("ipv4")];
}

/** `flock status` as an operator reads it (the text form). */
async function flockStatusText(node: FlockNode): Promise<string> {
  return (await runOk([node.executable, "status", "--socket", node.socketPath], {
    timeoutMs: 30_000,
  })).stdout;
}

Deno.test({
  name: "withheld addresses: the gauge and flock status show them until given back",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:fd::/120", cidr4: "10.253.0.0/24" },
      cooldownMs: 120_000,
      startAgent: false,
    });
    await node.startAgent({ env: { [RELEASE_SWEEP_ENV]: String(SWEEP_MS) } });
    await using nsA = await TestNamespace.create("flk-woa");
    await using nsB = await TestNamespace.create("flk-wob");
    assert.deepEqual(await withheldGauge(node), [0, 0], "nothing withheld yet");
    assert.doesNotMatch(await flockStatusText(node), /Withheld/);

    const f = await withholdThroughB(node, nsA, nsB);
    const shown = async (why: string) => {
      assert.deepEqual(await withheldGauge(node), [1, 0], `gauge: ${why}`);
      const { withheld } = await flockStatusJson(node);
      assert.equal(withheld?.ipv6, 1, why);
      assert.equal(withheld?.ipv4, 0, why);
      assert.equal(withheld?.addresses.length, 1, why);
      const [entry] = withheld!.addresses;
      assert.deepEqual([entry.address, entry.hostIface, entry.owner], [
        f.withheld,
        f.hostB,
        "wh-b/eth0",
      ]);
      assert.ok(Date.parse(entry.since) > Date.now() - 600_000, `since ${entry.since}`);
      const text = await flockStatusText(node);
      assert.match(
        text,
        /^Withheld addresses \(1\): still routed through another pod's host veth/m,
      );
      assert.match(
        text,
        new RegExp(`^  ${f.withheld} +${f.hostB} +wh-b/eth0 +${entry.since}$`, "m"),
      );
    };
    await shown("after the withholding DEL");
    await node.restartAgent();
    await shown("after a restart, loaded from the store");

    // An operator sets B's veth down: its routes go, the address stays withheld (B's pod may
    // still use it once the veth is up again), and both say so across several sweeps.
    await node.ns.ip(["link", "set", f.hostB, "down"]);
    await new Promise((r) => setTimeout(r, SWEEP_MS * 5));
    await shown("while its veth is down");

    // Up again: the host side repair routes it through B's veth again, and it stays withheld.
    await node.ns.ip(["link", "set", f.hostB, "up"]);
    await new Promise((r) => setTimeout(r, SWEEP_MS * 10));
    await shown("after its veth came up again");
    // Its route deleted by hand with the veth up: the sweep gives it back, and both follow.
    await node.ns.ip(["route", "del", f.withheld, "dev", f.hostB, "proto", "201"]);
    await eventually(
      "the gauge to drop once the sweep gave it back",
      () => withheldGauge(node),
      (g) => g[0] === 0 && g[1] === 0,
      10_000,
      100,
    );
    assert.deepEqual(withheldIps(node), []);
    assert.deepEqual((await flockStatusJson(node)).withheld, { ipv6: 0, ipv4: 0, addresses: [] });
    assert.doesNotMatch(await flockStatusText(node), /Withheld/);
    assert.equal((await node.cni("DEL", { containerId: "wh-b", netns: nsB.path })).code, 0);
    await node.settled();
  },
});
