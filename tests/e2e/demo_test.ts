/**
 * `flock demo` as a user runs it (`make demo` runs `dist/flock demo`): two node namespaces with
 * an agent and BIRD each, pods on both, pings across nodes over IPv6 and IPv4, the anycast
 * failover; then nothing of the demo is left: no namespace, no process, no work directory.
 * Also when the demo is interrupted (SIGINT, as Ctrl-C sends it) in the middle.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY, run } from "../helpers/exec.ts";
import { flockExecutable } from "../helpers/flock.ts";

/** The namespace prefix and work dir the demo printed in its first lines. */
function demoFootprint(output: string): { prefix: string; dir: string } {
  const prefix = /in namespaces (flk-demo-[0-9a-z]+)-\*/.exec(output)?.[1];
  const dir = /work dir (\S+)/.exec(output)?.[1];
  assert.ok(prefix && dir, `the demo names its namespaces and work dir:\n${output}`);
  return { prefix, dir };
}

async function namespacesWith(prefix: string): Promise<string[]> {
  const r = await run(["ip", "netns", "list"]);
  return r.stdout.split("\n").map((l) => l.split(" ")[0]).filter((n) => n.startsWith(prefix));
}

/** Processes whose command line mentions `text` (the demo's agents and BIRDs name its dir). */
async function processesMentioning(text: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name) || Number(entry.name) === Deno.pid) continue;
    const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`).catch(() => "");
    if (cmdline.includes(text)) found.push(`${entry.name}: ${cmdline.replaceAll("\0", " ")}`);
  }
  return found;
}

/** Asserts the demo left nothing behind; removes any leftover namespace either way. */
async function assertNothingLeft(footprint: { prefix: string; dir: string }): Promise<void> {
  const namespaces = await namespacesWith(footprint.prefix);
  for (const ns of namespaces) await run(["ip", "netns", "del", ns]);
  assert.deepEqual(namespaces, [], "no namespace of the demo is left");
  assert.deepEqual(await processesMentioning(footprint.dir), [], "no process of the demo is left");
  await assert.rejects(Deno.stat(footprint.dir), Deno.errors.NotFound, "work dir removed");
}

Deno.test({
  name: "flock demo: two nodes with BIRD, pods ping across nodes over IPv6 and IPv4, nothing left",
  ...ROOT_ONLY,
  async fn() {
    const flock = await flockExecutable();
    const r = await run([flock, "demo"], { timeoutMs: 90_000 });
    const output = r.stdout + r.stderr;
    const footprint = demoFootprint(output);
    try {
      assert.equal(r.code, 0, output);
      // Both nodes' sessions are up and each kernel has the other's summaries from BIRD.
      assert.match(output, /demo-node1 sessions: peer_10_99_0_12 up Established/);
      assert.match(output, /demo-node2 sessions: peer_10_99_0_11 up Established/);
      assert.match(output, /fd00:f10c:0:2::\/64 via fd00:99::12 dev eth0/);
      assert.match(output, /10\.244\.1\.0\/24 via 10\.99\.0\.11 dev eth0/);
      // Pod to pod across nodes, both directions, both families.
      for (const [from, to, net6, net4] of [[1, 2, "2", "2"], [2, 1, "1", "1"]]) {
        const line = `demo-node${from}/app -> demo-node${to}/app`;
        assert.match(output, new RegExp(`${line} fd00:f10c:0:${net6}::[0-9a-f]+: ok \\(`));
        assert.match(output, new RegExp(`${line} 10\\.244\\.${net4}\\.\\d+: ok \\(`));
      }
      // Anycast: served locally, then from the other node once the local replica is gone.
      assert.match(output, /demo-node1\/app -> anycast fd00:f10c:ffff::80: ok/);
      assert.match(output, /kernel: 10\.244\.255\.80 via 10\.99\.0\.12 dev eth0 proto bird/);
      assert.match(output, /demo-node1\/app -> anycast 10\.244\.255\.80 \(remote\): ok/);
      assert.doesNotMatch(output, /FAILED/);
      assert.match(output, /flock links left on the nodes: 0/);
      assert.match(output, /== demo OK/);
    } finally {
      await assertNothingLeft(footprint);
    }
  },
});

Deno.test({
  name: "flock demo: interrupted (SIGINT) while running, it removes everything and exits 130",
  ...ROOT_ONLY,
  async fn() {
    const flock = await flockExecutable();
    const child = new Deno.Command(flock, {
      args: ["demo"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    let output = "";
    const decoder = new TextDecoder();
    const reader = child.stdout.getReader();
    const watchdog = setTimeout(() => child.kill("SIGKILL"), 60_000);
    try {
      // Interrupt once the pods run on both nodes (agents, BIRDs and pods all exist).
      while (!output.includes("== BGP:")) {
        const { value, done } = await reader.read();
        if (done) break;
        output += decoder.decode(value, { stream: true });
      }
      assert.ok(output.includes("== BGP:"), `the demo got as far as BGP:\n${output}`);
      child.kill("SIGINT");
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        output += decoder.decode(value, { stream: true });
      }
      const status = await child.status;
      const all = output + await stderr;
      assert.equal(status.code, 130, all);
      assert.match(all, /interrupted: cleaning up/);
      assert.match(all, /== removed \d+ namespaces, 4 processes/);
      await assertNothingLeft(demoFootprint(output));
    } finally {
      clearTimeout(watchdog);
      reader.releaseLock();
      await child.stdout.cancel().catch(() => {});
      await child.status;
    }
  },
});
