/**
 * `flock demo`: flock's main job on its embedded default configuration, with
 * no cluster. It makes a node namespace (with an `eth0` uplink), runs the agent
 * inside it in standalone mode, starts pods through the real CNI exec path,
 * shows their addresses and pings between them, then removes everything.
 *
 * The scaffolding (namespaces, ping) uses iproute2 and iputils, as an operator
 * would; flock itself touches the kernel only through rtnetlink.
 */

import { join } from "node:path";
import { EMBEDDED_DEFAULT_CONFIG } from "./config.ts";
import { install, renderConflist, selfExecutable } from "./install.ts";

const POD_COUNT = 3;

async function run(
  cmd: string,
  args: string[],
  opts: { stdin?: string; env?: Record<string, string> } = {},
) {
  const child = new Deno.Command(cmd, {
    args,
    env: opts.env,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function must(cmd: string, args: string[]) {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Runs the demo; returns the exit code. */
export async function demoMain(_args: string[]): Promise<number> {
  if (Deno.uid() !== 0) {
    console.error("flock demo needs root (it creates network namespaces)");
    return 1;
  }
  const tag = `flkdemo${Deno.pid % 10000}`;
  const nodeNs = `${tag}-node`;
  const uplinkNs = `${tag}-up`;
  const pods = Array.from(
    { length: POD_COUNT },
    (_, i) => ({ ns: `${tag}-p${i + 1}`, id: `${tag}-pod${i + 1}` }),
  );
  const namespaces = [nodeNs, uplinkNs, ...pods.map((p) => p.ns)];
  const dir = await Deno.makeTempDir({ prefix: "flock-demo-" });
  const socket = join(dir, "flock.sock");
  const binDir = join(dir, "bin");
  const confDir = join(dir, "net.d");
  let agent: Deno.ChildProcess | undefined;
  let ok = false;
  try {
    console.log(`== node namespace ${nodeNs} (with an eth0 uplink and no IPv4 default route)`);
    for (const ns of namespaces) await must("ip", ["netns", "add", ns]);
    await must("ip", [
      "-n",
      nodeNs,
      ...`link add eth0 type veth peer name eth0 netns ${uplinkNs}`.split(" "),
    ]);
    await must("ip", ["-n", nodeNs, "link", "set", "eth0", "up"]);

    await Deno.writeTextFile(join(dir, "nodeconfig.yaml"), EMBEDDED_DEFAULT_CONFIG);
    console.log("== embedded NodeConfig\n" + EMBEDDED_DEFAULT_CONFIG.trim().replace(/^/gm, "   "));
    await install({ binDir, confDir, networkName: "flock", socketPath: socket });
    const flock = join(binDir, "flock");

    console.log("== starting the agent inside the node namespace (standalone mode)");
    agent = new Deno.Command("nsenter", {
      args: [
        `--net=/var/run/netns/${nodeNs}`,
        selfExecutable(),
        "agent",
        "--node",
        "demo-node",
        "--config",
        join(dir, "nodeconfig.yaml"),
        "--state-dir",
        join(dir, "state"),
        "--socket",
        socket,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const agentLog = join(dir, "agent.log");
    agent.stderr.pipeTo(Deno.openSync(agentLog, { write: true, create: true }).writable).catch(
      () => {},
    );

    const netconf = JSON.parse(renderConflist({ networkName: "flock", socketPath: socket }));
    const pluginConf = JSON.stringify({
      cniVersion: netconf.cniVersion,
      name: netconf.name,
      ...netconf.plugins[0],
    });
    const cni = (command: string, pod: { ns: string; id: string }) =>
      run(flock, [], {
        stdin: pluginConf,
        env: {
          CNI_COMMAND: command,
          CNI_CONTAINERID: pod.id,
          CNI_NETNS: `/var/run/netns/${pod.ns}`,
          CNI_IFNAME: "eth0",
          CNI_PATH: binDir,
          CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=${pod.id}`,
        },
      });

    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await run(flock, [], {
        stdin: pluginConf,
        env: { CNI_COMMAND: "STATUS", CNI_PATH: binDir },
      });
      if (r.code === 0) break;
      if (Date.now() > deadline) throw new Error(`agent did not become ready: ${r.stdout}`);
      await new Promise((res) => setTimeout(res, 100));
    }

    console.log(`== ${POD_COUNT} pods through the CNI exec path (${flock})`);
    const addrs: { v6: string; v4: string }[] = [];
    for (const pod of pods) {
      const t = performance.now();
      const r = await cni("ADD", pod);
      if (r.code !== 0) throw new Error(`ADD ${pod.id} failed: ${r.stdout}${r.stderr}`);
      const result = JSON.parse(r.stdout);
      const ips: string[] = result.ips.map((i: { address: string }) => i.address);
      addrs.push({
        v6: ips.find((a) => a.includes(":"))!.split("/")[0],
        v4: ips.find((a) => !a.includes(":"))!.split("/")[0],
      });
      console.log(
        `   ${pod.id}: ${ips.join("  ")}  host ${result.interfaces[0].name}  (${
          (performance.now() - t).toFixed(0)
        } ms)`,
      );
    }
    console.log(`== inside ${pods[0].ns}`);
    console.log(
      (await must("ip", ["-n", pods[0].ns, "-br", "addr", "show", "eth0"])).replace(/^/gm, "   ")
        .trimEnd(),
    );
    for (const fam of ["-6", "-4"]) {
      console.log(
        (await must("ip", ["-n", pods[0].ns, fam, "route"])).replace(/^/gm, "   ").trimEnd(),
      );
    }
    console.log(`== routes flock installed on the node (proto 201)`);
    for (const fam of ["-6", "-4"]) {
      console.log(
        (await must("ip", ["-n", nodeNs, fam, "route", "show", "proto", "201"])).replace(
          /^/gm,
          "   ",
        ).trimEnd(),
      );
    }
    console.log("== ping between pods");
    let failures = 0;
    for (let i = 1; i < pods.length; i++) {
      for (const target of [addrs[i].v6, addrs[i].v4]) {
        const r = await run("ip", [
          "netns",
          "exec",
          pods[0].ns,
          "ping",
          "-c",
          "1",
          "-W",
          "2",
          target,
        ]);
        const rtt = /time=([\d.]+ ms)/.exec(r.stdout)?.[1];
        console.log(
          `   ${pods[0].id} -> ${pods[i].id} ${target}: ${r.code === 0 ? `ok (${rtt})` : "FAILED"}`,
        );
        if (r.code !== 0) failures++;
      }
    }
    console.log("== deleting the pods");
    for (const pod of pods) {
      const r = await cni("DEL", pod);
      if (r.code !== 0) throw new Error(`DEL ${pod.id} failed: ${r.stdout}`);
    }
    const left = (await must("ip", ["-n", nodeNs, "-br", "link"])).split("\n").filter((l) =>
      l.startsWith("flock")
    );
    console.log(`   flock links left on the node: ${left.length}`);
    ok = failures === 0 && left.length === 0;
    console.log(ok ? "== demo OK" : "== demo FAILED");
  } catch (e) {
    console.error(`demo failed: ${(e as Error).message}`);
    const log = await Deno.readTextFile(join(dir, "agent.log")).catch(() => "");
    if (log) console.error("agent log:\n" + log.split("\n").slice(-15).join("\n"));
  } finally {
    if (agent) {
      try {
        agent.kill("SIGTERM");
      } catch { /* already gone */ }
      await agent.status;
    }
    for (const ns of namespaces) await run("ip", ["netns", "del", ns]);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return ok ? 0 : 1;
}
