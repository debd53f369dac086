/**
 * Fuzzing the plugin and the agent's RPC socket (issue 3): 1,000+ random inputs — mutated
 * network configs, random environment values, random bytes and malformed frames — against a real
 * agent. The agent must never crash, every answer must be a well-formed CNI Result or error, and
 * after a DEL of everything that was ever ADDed nothing may be left: no record, link or route.
 *
 * Inputs come from a printed seed (replay with `FLOCK_TEST_SEED=<seed>`); they are all generated
 * before the first one is sent, so concurrency cannot change them.
 */

import assert from "node:assert/strict";
import { forEachBounded } from "../../agent/bounded.ts";
import { isValidNetworkName } from "../../agent/cni_input.ts";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { Prng } from "../helpers/prng.ts";
import { assertNodeHolds } from "../helpers/node_state.ts";
import { cniErrorProblem, cniResultProblem } from "../helpers/cni_output.ts";

/** Inputs in all; the first {@link VIA_PLUGIN} go through the exec path, the rest to the socket. */
const TOTAL = 1_200;
const VIA_PLUGIN = 120;
/** Requests in flight at once. */
const LANES = 4;
const A = "flock.fritzlab.net/";

/** One invocation as a runtime would make it: CNI_* variables and stdin. */
interface Invocation {
  env: Record<string, string | undefined>;
  stdin: string;
}

/** What the RPC path sends: bytes, and whether to half-close or hang up without a request. */
interface Frame {
  bytes: Uint8Array;
  /** Hang up right after connecting (no answer is expected). */
  hangUp?: boolean;
}

/**
 * The attachments an ADD may have created, for the final clean-up: `[containerId, ifname,
 * network]` as JSON (a DEL undoes only the attachment of the network it names).
 */
type Attempts = Set<string>;

/** The `name` of a request's network config, if it has a readable one. */
function networkName(config: unknown): unknown {
  try {
    const value = typeof config === "string" ? JSON.parse(config) : config;
    return value?.name;
  } catch {
    return undefined;
  }
}

const COMMANDS = ["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "STATUS", "GC"];
const VERSIONS = ["1.0.0", "1.1.0", "0.4.0", "0.3.1", "0.3.0", "2.0.0", "", "1.0", "latest"];
const ANNOTATION_VALUES: Record<string, string[]> = {
  ipv6: ["auto", "none", "fd00:f2::33", "fd00:f2::", "fd00:f3::1", "::1", "10.242.0.5", ""],
  ipv4: ["auto", "none", "10.242.0.33", "10.242.0.255", "10.9.9.9", "fd00:f2::4", "x"],
  cidr6: ["fd00:f2::/120", "fd00:f2::100/120", "fd00:f3::/64", "fd00:f2::/200", "auto"],
  cidr4: ["10.242.0.0/28", "10.242.0.64/26", "10.0.0.0/8", "10.242.0.0/33", ""],
  "ip-algo": ["next", "lowest", "random", "hash", "fastest", ""],
  anycast: ["fd00:aa::1", "", "a,b", "10.255.0.1"],
  ipv7: ["auto"],
};

/** Generates the inputs; pod namespaces are the only real paths it ever names. */
class InputGenerator {
  constructor(
    readonly rng: Prng,
    readonly netconf: Record<string, unknown>,
    readonly podPaths: string[],
  ) {}

  containerId(): string {
    const r = this.rng;
    if (r.chance(0.75)) return `fz-${r.int(6)}`;
    return r.pick(["", "-x", "a/b", "x".repeat(300), `fz-${r.string(6)}`, r.string(12)]);
  }

  /**
   * A netns that is one of the test's pod namespaces, or one that cannot exist or is
   * malformed: never a path that might be the host's or another test's namespace.
   */
  netns(): string {
    const r = this.rng;
    if (r.chance(0.7)) return r.pick(this.podPaths);
    return r.pick([
      "",
      "relative/ns",
      "/nonexistent-flk-fuzz/ns",
      `/nonexistent-flk-fuzz/${r.string(10).replaceAll("\0", "")}`,
      "/nonexistent-flk-fuzz/\0x",
    ]);
  }

  ifname(): string {
    const r = this.rng;
    if (r.chance(0.8)) return "eth0";
    return r.pick(["eth1", "", "a".repeat(16), "et h0", "..", "e/x", r.string(10)]);
  }

  args(): string {
    const r = this.rng;
    return r.pick([
      "",
      "IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=p",
      `K8S_POD_NAMESPACE=${r.string(5)};K8S_POD_NAME=${r.string(5)}`,
      r.string(30),
    ]);
  }

  annotations(): Record<string, unknown> | unknown {
    const r = this.rng;
    if (r.chance(0.1)) return r.json(2);
    const out: Record<string, unknown> = {};
    for (let i = r.int(3); i > 0; i--) {
      const key = r.pick(Object.keys(ANNOTATION_VALUES));
      out[A + key] = r.chance(0.9) ? r.pick(ANNOTATION_VALUES[key]) : r.json(1);
    }
    return out;
  }

  /** The node's netconf with a few random mutations. */
  config(): Record<string, unknown> {
    const r = this.rng;
    const c: Record<string, unknown> = structuredClone(this.netconf);
    if (r.chance(0.4)) {
      c.runtimeConfig = { "io.kubernetes.cri.pod-annotations": this.annotations() };
    }
    for (let i = r.int(3); i > 0; i--) {
      switch (r.int(6)) {
        case 0:
          c.cniVersion = r.chance(0.8) ? r.pick(VERSIONS) : r.json(1);
          break;
        case 1:
          delete c[r.pick(Object.keys(c))];
          break;
        case 2:
          c[r.pick(Object.keys(c))] = r.json(2);
          break;
        case 3:
          c.prevResult = r.chance(0.5)
            ? { cniVersion: "1.0.0", ips: [{ address: r.pick(["fd00:f2::1/128", "x", "1/1"]) }] }
            : r.json(2);
          break;
        case 4:
          c["cni.dev/valid-attachments"] = r.chance(0.5)
            ? [{ containerID: this.containerId(), ifname: "eth0" }]
            : r.json(2);
          break;
        default:
          c[r.string(8)] = r.json(2);
      }
    }
    return c;
  }

  invocation(): Invocation {
    const r = this.rng;
    const command = r.chance(0.95) ? r.pick(COMMANDS) : r.pick(["VERSION", "", "add", "FROB"]);
    const env: Record<string, string | undefined> = {
      CNI_COMMAND: command,
      CNI_CONTAINERID: this.containerId(),
      CNI_NETNS: this.netns(),
      CNI_IFNAME: this.ifname(),
      CNI_ARGS: this.args(),
    };
    for (const key of Object.keys(env)) if (r.chance(0.05)) env[key] = undefined;
    const config = this.config();
    const text = JSON.stringify(config);
    const stdin = r.chance(0.85)
      ? text
      : r.pick([text.slice(0, r.int(text.length)), r.string(80), "", "null", "[]"]);
    return { env, stdin };
  }

  /** The plugin path must only ever talk to this test's agent, and log nowhere. */
  pluginInvocation(socketPath: string): Invocation {
    const inv = this.invocation();
    // An environment cannot carry NUL bytes (execve's strings end there).
    for (const [k, v] of Object.entries(inv.env)) inv.env[k] = v?.replaceAll("\0", "");
    try {
      const config = JSON.parse(inv.stdin);
      if (config && typeof config === "object" && !Array.isArray(config)) {
        config.agentSocket = socketPath;
        delete config.logFile;
        delete config.timeoutSeconds;
        inv.stdin = JSON.stringify(config);
      }
    } catch { /* not JSON: the plugin rejects it before it connects */ }
    return inv;
  }

  frame(): Frame {
    const r = this.rng;
    const inv = this.invocation();
    const request = (): Record<string, unknown> => {
      let config: unknown;
      try {
        config = JSON.parse(inv.stdin);
      } catch {
        config = inv.stdin;
      }
      return {
        command: inv.env.CNI_COMMAND,
        containerId: inv.env.CNI_CONTAINERID,
        netns: inv.env.CNI_NETNS,
        ifname: inv.env.CNI_IFNAME,
        args: inv.env.CNI_ARGS,
        config,
      };
    };
    const line = (value: unknown) => new TextEncoder().encode(JSON.stringify(value) + "\n");
    const pick = r.next();
    if (pick < 0.6) return { bytes: line(request()) };
    if (pick < 0.7) {
      const req = request();
      req[r.pick(Object.keys(req))] = r.json(2);
      return { bytes: line(req) };
    }
    if (pick < 0.78) return { bytes: r.bytes(r.int(400)) };
    if (pick < 0.84) return { bytes: line(r.json(3)) };
    if (pick < 0.9) {
      const full = line(request());
      return { bytes: full.subarray(0, r.int(full.length)) };
    }
    if (pick < 0.95) {
      // Two requests in one frame: only the first is served.
      const first = line(request());
      const both = new Uint8Array(first.length * 2);
      both.set(first);
      both.set(first, first.length);
      return { bytes: both };
    }
    if (pick < 0.985) return { bytes: new Uint8Array(0), hangUp: r.chance(0.5) };
    // Oversized: more than the agent's 1 MiB request bound.
    return { bytes: new TextEncoder().encode(`{"command":"ADD","x":"${"a".repeat(1_100_000)}`) };
  }
}

/** Sends one frame on a fresh connection, half-closes, and reads the whole answer (bounded). */
async function sendFrame(path: string, frame: Frame, timeoutMs = 10_000): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    if (frame.hangUp) return "";
    let offset = 0;
    while (offset < frame.bytes.length) {
      offset += await conn.write(frame.bytes.subarray(offset));
    }
    await conn.closeWrite();
    const body = await new Response(conn.readable).arrayBuffer();
    return new TextDecoder().decode(body);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the reader or the timer */ }
  }
}

/** Why an RPC answer is not one line of `{ok:true,result?}` or `{ok:false,error}`. */
function rpcAnswerProblem(text: string): string | undefined {
  if (!text.endsWith("\n") || text.indexOf("\n") !== text.length - 1) return "not one line";
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text);
  } catch {
    return "not JSON";
  }
  if (v?.ok === true) {
    return v.result === undefined ? undefined : cniResultProblem(v.result);
  }
  if (v?.ok !== false) return "no ok flag";
  return cniErrorProblem({ cniVersion: "1.0.0", ...(v.error as object) });
}

/** Runs `jobs` with at most `lanes` at once; throws the first job's failure. */
async function inLanes<T>(jobs: T[], lanes: number, fn: (job: T) => Promise<void>) {
  const failed = (await forEachBounded(jobs, lanes, fn)).find((o) => o.status === "rejected");
  if (failed) throw failed.reason;
}

Deno.test({
  name: `fuzz: ${TOTAL} random inputs at the plugin and the agent's socket, no crash, no leak`,
  ...ROOT_ONLY,
  async fn() {
    const rng = Prng.fromEnv("fuzz");
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f2::/64", cidr4: "10.242.0.0/24" },
    });
    const pods: TestNamespace[] = [];
    try {
      for (let i = 0; i < 4; i++) pods.push(await TestNamespace.create("flk-fz"));
      const gen = new InputGenerator(
        rng,
        JSON.parse(await node.netconf()),
        pods.map((p) => p.path),
      );
      const viaPlugin = Array.from(
        { length: VIA_PLUGIN },
        () => gen.pluginInvocation(node.socketPath),
      );
      const viaSocket = Array.from({ length: TOTAL - VIA_PLUGIN }, () => gen.frame());

      const attempts: Attempts = new Set();
      const noteAdd = (env: Record<string, string | undefined>, stdin: string) => {
        if (env.CNI_COMMAND !== "ADD") return;
        attempts.add(
          JSON.stringify([env.CNI_CONTAINERID ?? "", env.CNI_IFNAME ?? "", networkName(stdin)]),
        );
      };
      const problems: string[] = [];
      const outcomes = new Map<string, number>();
      const count = (key: string) => void outcomes.set(key, (outcomes.get(key) ?? 0) + 1);

      await inLanes(viaPlugin, LANES, async (inv) => {
        noteAdd(inv.env, inv.stdin);
        const r = await node.cni(inv.env.CNI_COMMAND ?? "", {
          stdin: inv.stdin,
          env: { ...inv.env, CNI_PATH: node.binDir },
        });
        const label = `plugin ${JSON.stringify(inv.env)} stdin ${inv.stdin.slice(0, 200)}`;
        if (!inv.env.CNI_COMMAND) {
          if (r.code !== 0 || r.stdout !== "") {
            problems.push(`${label}: no CNI_COMMAND: ${r.stdout}`);
          }
          count("plugin about");
          return;
        }
        if (r.code === 0) {
          count(`plugin ok ${inv.env.CNI_COMMAND}`);
          const why = inv.env.CNI_COMMAND === "ADD"
            ? cniResultProblem(r.json)
            : inv.env.CNI_COMMAND === "VERSION"
            ? (Array.isArray(r.json?.supportedVersions) ? undefined : "VERSION reply")
            : (r.stdout === "" ? undefined : "output on success");
          if (why) problems.push(`${label}: ${why}: ${r.stdout}`);
        } else {
          count(`plugin error ${r.json?.code}`);
          const why = cniErrorProblem(r.json);
          if (why) problems.push(`${label}: exit ${r.code}: ${why}: ${r.stdout} ${r.stderr}`);
        }
      });

      await inLanes(viaSocket, LANES, async (frame) => {
        try {
          const text = JSON.parse(new TextDecoder().decode(frame.bytes));
          if (text?.command === "ADD") {
            attempts.add(JSON.stringify([
              String(text.containerId),
              String(text.ifname),
              networkName(text.config),
            ]));
          }
        } catch { /* not a request */ }
        const answer = await sendFrame(node.socketPath, frame).catch((e) => {
          const sent = new TextDecoder().decode(frame.bytes.subarray(0, 300));
          problems.push(`socket ${JSON.stringify(sent)}: no answer: ${e}`);
          return undefined;
        });
        if (answer === undefined) return;
        if (frame.hangUp || frame.bytes.length === 0) {
          // Nothing asked, nothing answered: the agent just closes.
          if (answer !== "") problems.push(`empty request answered: ${answer}`);
          return count("socket nothing sent");
        }
        const why = rpcAnswerProblem(answer);
        if (why) {
          const sent = new TextDecoder().decode(frame.bytes.subarray(0, 200));
          problems.push(`socket ${JSON.stringify(sent)}: ${why}: ${answer.slice(0, 300)}`);
          return;
        }
        const v = JSON.parse(answer);
        count(v.ok ? `socket ok` : `socket error ${v.error.code}`);
      });

      console.log(
        `fuzz: ${VIA_PLUGIN} via the plugin, ${TOTAL - VIA_PLUGIN} via the socket; outcomes: ${
          JSON.stringify(Object.fromEntries([...outcomes].sort()))
        }`,
      );
      assert.deepEqual(problems.slice(0, 10), [], `${problems.length} malformed answers`);

      // The agent survived: still the same process, still answering.
      const exited = await Promise.race([
        node.agent!.status.then(() => true),
        new Promise<false>((resolve) => setTimeout(() => resolve(false), 200)),
      ]);
      assert.equal(exited, false, `the agent died:\n${(await node.agentLog()).slice(-3000)}`);
      assert.equal((await node.cni("STATUS")).code, 0, "the agent answers STATUS");

      // No leak: a DEL of every pair an ADD named leaves the node empty.
      // Sent to the socket: some of these IDs could not even be put into an environment.
      const netconf = JSON.parse(await node.netconf());
      for (const pair of attempts) {
        const [containerId, ifname, name] = JSON.parse(pair);
        // An ADD's config without a valid name was refused: it made nothing.
        if (typeof name !== "string" || !isValidNetworkName(name)) continue;
        const config = { ...netconf, name };
        const request = { command: "DEL", containerId, ifname, netns: "", args: "", config };
        const bytes = new TextEncoder().encode(JSON.stringify(request) + "\n");
        const v = JSON.parse(await sendFrame(node.socketPath, { bytes }));
        if (!v.ok && v.error.code !== 4) problems.push(`DEL ${pair}: ${JSON.stringify(v)}`);
      }
      assert.deepEqual(problems, [], "every DEL of a valid pair succeeds");
      await assertNodeHolds(node, [], "after deleting everything the fuzz added");
      for (const pod of pods) {
        const links = await pod.ipJson<{ ifname: string }[]>(["link", "show"]);
        assert.deepEqual(links.map((l) => l.ifname), ["lo"], `interfaces left in ${pod.name}`);
      }
    } finally {
      for (const pod of pods) await pod.remove().catch(() => {});
    }
  },
});
