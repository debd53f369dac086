/**
 * What an operator sees on a node with pods: `/metrics` counters and gauges moving with ADD and
 * DEL, `/healthz` and `/readyz`, `flock status` as a table and as JSON, the agent's JSON log
 * lines and the plugin's log file. The agent is the real process inside a node namespace; its
 * HTTP endpoint listens on the namespace's loopback (the default 127.0.0.1:9603).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, run, runOk } from "../helpers/exec.ts";
import { hostIfaceName } from "../../agent/datapath.ts";

const CONFIG = {
  cidr6: "fd00:66::/64",
  cidr4: "10.66.0.0/24",
  anycastCIDRs: ["fd00:66ff::/112"],
};
const ANYCAST = "fd00:66ff::7";

/** Sample values by series (`name{labels}`) from a Prometheus text body. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

async function scrape(node: FlockNode): Promise<Map<string, number>> {
  const r = await node.httpGet("/metrics");
  assert.equal(r.status, 200);
  assert.equal(r.contentType, "text/plain; version=0.0.4; charset=utf-8");
  return parseMetrics(r.body);
}

async function flockStatus(node: FlockNode, ...args: string[]) {
  return await run([node.executable, "status", "--socket", node.socketPath, ...args], {
    timeoutMs: 30_000,
  });
}

const podArgs = (name: string) =>
  `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=x`;

Deno.test({
  name: "observability: /metrics, /healthz, /readyz, flock status and logs follow ADD and DEL",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: CONFIG });
    await using a = await TestNamespace.create("flk-oa");
    await using b = await TestNamespace.create("flk-ob");
    // The plugin creates a missing log directory (e.g. /var/log/flock on a fresh node).
    const pluginLog = join(node.dir, "log", "cni.log");

    assert.deepEqual(
      { ...await node.httpGet("/healthz"), contentType: undefined },
      { status: 200, body: "ok\n", contentType: undefined },
    );
    assert.equal((await node.httpGet("/readyz")).status, 200);
    const m0 = await scrape(node);
    assert.equal(m0.get("flock_agent_ready"), 1);
    assert.equal(m0.get('flock_cni_requests_total{command="ADD",result="ok"}') ?? 0, 0);
    assert.equal(m0.get('flock_ipam_addresses_free{family="ipv4",cidr="10.66.0.0/24"}'), 254);

    const ra = await node.cni("ADD", {
      containerId: "ctr-obs-a",
      netns: a.path,
      args: podArgs("web-1"),
      extraConfig: {
        logFile: pluginLog,
        runtimeConfig: {
          "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/anycast": ANYCAST },
        },
      },
    });
    assert.equal(ra.code, 0, ra.stdout + ra.stderr);
    const rb = await node.cni("ADD", {
      containerId: "ctr-obs-b",
      netns: b.path,
      args: podArgs("web-2"),
    });
    assert.equal(rb.code, 0, rb.stdout);
    // A bad annotation is a failed ADD with code 7 and nothing allocated.
    const bad = await node.cni("ADD", {
      containerId: "ctr-obs-bad",
      netns: b.path,
      ifname: "net1",
      extraConfig: {
        runtimeConfig: { "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ipv6": "x" } },
      },
    });
    assert.equal(bad.code, 1);

    const m1 = await scrape(node);
    assert.equal(m1.get('flock_cni_requests_total{command="ADD",result="ok"}'), 2);
    assert.equal(m1.get('flock_cni_requests_total{command="ADD",result="error"}'), 1);
    assert.equal(m1.get(`flock_cni_errors_total{command="ADD",code="${bad.json.code}"}`), 1);
    assert.equal(m1.get('flock_cni_request_duration_seconds_count{command="ADD"}'), 3);
    assert.equal(m1.get('flock_cni_request_duration_seconds_bucket{command="ADD",le="+Inf"}'), 3);
    assert.ok(m1.get('flock_cni_request_duration_seconds_sum{command="ADD"}')! > 0);
    assert.equal(m1.get('flock_ipam_addresses_allocated{family="ipv6",cidr="fd00:66::/64"}'), 2);
    assert.equal(m1.get('flock_ipam_addresses_allocated{family="ipv4",cidr="10.66.0.0/24"}'), 2);
    assert.equal(m1.get('flock_ipam_addresses_free{family="ipv4",cidr="10.66.0.0/24"}'), 252);
    assert.equal(m1.get('flock_attachments{state="committed"}'), 2);
    assert.equal(m1.get("flock_anycast_routes"), 1);

    // flock status, table: ready, both pods with their addresses, host ifaces and anycast.
    const table = await flockStatus(node);
    assert.equal(table.code, 0, table.stdout + table.stderr);
    assert.match(table.stdout, new RegExp(`^flock \\S+ on node ${node.name}: READY$`, "m"));
    const ipsA: string[] = ra.json.ips.map((i: { address: string }) => i.address.split("/")[0]);
    const rowA = table.stdout.split("\n").find((l) => l.includes("shop/web-1"));
    assert.ok(rowA, table.stdout);
    for (const want of [hostIfaceName("ctr-obs-a"), ...ipsA, ANYCAST, "committed"]) {
      assert.ok(rowA.includes(want), `${want} in ${rowA}`);
    }
    assert.match(table.stdout, /^ {2}ipv4 +10\.66\.0\.0\/24 +2 +254 /m);
    assert.match(table.stdout, /^Pods \(2\)$/m);
    assert.match(table.stdout, new RegExp(`Store: ${node.stateDir}/flock.db \\(integrity: ok\\)`));

    // flock status --json: the same facts, machine-readable.
    const json = await flockStatus(node, "--json");
    assert.equal(json.code, 0);
    const snap = JSON.parse(json.stdout);
    assert.equal(snap.ready, true);
    assert.equal(snap.node, node.name);
    assert.deepEqual(
      snap.pools.map((p: { family: string; allocated: number }) => [p.family, p.allocated]),
      [["ipv6", 2], ["ipv4", 2]],
    );
    const attA = snap.attachments.find((x: { pod?: string }) => x.pod === "web-1");
    assert.equal(attA.namespace, "shop");
    assert.equal(attA.hostIface, hostIfaceName("ctr-obs-a"));
    assert.deepEqual(attA.anycast, [ANYCAST]);
    assert.deepEqual(snap.anycast, [{ address: ANYCAST, holders: 1 }]);
    assert.equal(snap.store.integrity, "ok");

    const del = await node.cni("DEL", {
      containerId: "ctr-obs-a",
      netns: a.path,
      args: podArgs("web-1"),
    });
    assert.equal(del.code, 0, del.stdout);
    // DEL answers before its veth is gone; the addresses are released after.
    await node.settled();
    const m2 = await scrape(node);
    assert.equal(m2.get('flock_attachments{state="releasing"}'), 0);
    assert.equal(m2.get('flock_cni_requests_total{command="DEL",result="ok"}'), 1);
    assert.equal(m2.get('flock_cni_request_duration_seconds_count{command="DEL"}'), 1);
    assert.equal(m2.get('flock_ipam_addresses_allocated{family="ipv6",cidr="fd00:66::/64"}'), 1);
    assert.equal(m2.get('flock_attachments{state="committed"}'), 1);
    assert.equal(m2.get("flock_anycast_routes"), 0);

    // The agent's log: one JSON object per line; ADD and DEL with pod, addresses, duration.
    const lines = (await node.agentLog()).trim().split("\n").map((l) => JSON.parse(l));
    for (const l of lines) {
      assert.equal(typeof l.ts, "string");
      assert.ok(["debug", "info", "warn", "error"].includes(l.level), JSON.stringify(l));
      assert.equal(typeof l.msg, "string");
    }
    const addA = lines.find((l) => l.command === "ADD" && l.containerId === "ctr-obs-a");
    assert.equal(addA.pod, "shop/web-1");
    assert.equal(addA.outcome, "ok");
    assert.equal(typeof addA.ms, "number");
    assert.deepEqual(addA.ips.map((x: string) => x.split("/")[0]).sort(), [...ipsA].sort());
    const delA = lines.find((l) => l.command === "DEL" && l.containerId === "ctr-obs-a");
    assert.deepEqual(delA.ips.sort(), [...ipsA].sort());
    assert.equal(delA.outcome, "ok");
    const badLine = lines.find((l) => l.containerId === "ctr-obs-bad");
    assert.equal(badLine.outcome, "error");
    assert.equal(badLine.level, "warn");

    // The plugin logged its ADD to the file, and stdout carried only the Result.
    const pluginLines = (await Deno.readTextFile(pluginLog)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assert.equal(pluginLines.length, 1);
    assert.equal(pluginLines[0].command, "ADD");
    assert.equal(pluginLines[0].containerId, "ctr-obs-a");
    assert.equal(typeof pluginLines[0].durationMs, "number");
    assert.equal(ra.stdout.trim().split("\n").length, 1);
    assert.equal((await Deno.stat(pluginLog)).mode! & 0o777, 0o600);

    // `flock install --log-file` puts the log file into the conflist the runtime reads.
    const inst = join(node.dir, "inst");
    await runOk([
      node.executable,
      "install",
      "--bin-dir",
      join(inst, "bin"),
      "--conf-dir",
      join(inst, "net.d"),
      "--log-file",
      "/var/log/flock/cni.log",
    ]);
    const conflist = JSON.parse(await Deno.readTextFile(join(inst, "net.d", "01-flock.conflist")));
    assert.equal(conflist.plugins[0].logFile, "/var/log/flock/cni.log");

    // After a restart, the start-up reconcile counts what it restored.
    await node.restartAgent();
    const m3 = await scrape(node);
    assert.equal(m3.get('flock_reconcile_actions_total{action="restored"}'), 1);
    assert.equal(m3.get('flock_reconcile_actions_total{action="released"}'), 0);
    assert.equal(m3.get('flock_cni_requests_total{command="ADD",result="ok"}') ?? 0, 0);

    // An agent that is gone: flock status says so and exits 3.
    await node.kill("SIGKILL");
    const gone = await flockStatus(node);
    assert.equal(gone.code, 3);
    assert.match(gone.stdout, /cannot ask the agent/);
    const goneJson = await flockStatus(node, "--json");
    assert.equal(goneJson.code, 3);
    assert.equal(JSON.parse(goneJson.stdout).ready, false);
  },
});
