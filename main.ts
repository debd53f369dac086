/**
 * flock's single entry point. A runtime exec'ing the CNI plugin sets
 * `CNI_COMMAND`; everything else is a sub-command. Each mode is imported only
 * when chosen, so the CNI path loads nothing but the thin client.
 *
 * @module
 */

import { FLOCK_VERSION } from "./version.ts";

export { FLOCK_VERSION };

const USAGE = `flock ${FLOCK_VERSION} — IPv6-first, L3-routed Kubernetes network plugin

Usage:
  CNI_COMMAND=ADD|DEL|CHECK|GC|STATUS|VERSION flock   run as a CNI plugin (stdin: network config)
  flock agent [--node NAME] [--config FILE] [--state-dir DIR] [--socket PATH]
              [--http ADDR|off] [--log-level debug|info|warn|error]
                                                     run the per-node agent (standalone with
                                                     --config, else cluster mode)
  flock agent --node NAME [--kubeconfig FILE] [--netns PATH] [--nodeconfig-wait-ms MS]
                                                     cluster mode: NodeConfig, pod annotations
                                                     and status via the API server
  flock install [--bin-dir DIR] [--conf-dir DIR] [--socket PATH]
                [--network-name NAME] [--log-file PATH]
                                                     install the plugin binary and its conflist
                                                     (network name default "flock")
  flock status [--socket PATH] [--json]              the local agent: ready or why not, pools, pods,
                                                     BGP sessions, last BIRD reload (exit 0 = ready)
  flock demo [--nodes N]                             N (default 2) node namespaces with BIRD and an
                                                     agent each, pods pinging across nodes
  flock version                                      print the version
  flock --help                                       this text
`;

async function main(args: string[]): Promise<number> {
  // Empty counts as unset, as in the reference skel: the about text, not an error.
  if (Deno.env.get("CNI_COMMAND")) {
    const { cniMain } = await import("./cni.ts");
    return await cniMain();
  }
  const [mode, ...rest] = args;
  switch (mode) {
    case "agent": {
      const { agentMain } = await import("./agent/agent_main.ts");
      return await agentMain(rest);
    }
    case "install": {
      const { installMain } = await import("./agent/install.ts");
      return await installMain(rest);
    }
    case "status": {
      const { statusMain } = await import("./agent/status.ts");
      return await statusMain(rest);
    }
    case "demo": {
      const { demoMain } = await import("./agent/demo.ts");
      return await demoMain(rest);
    }
    case "version":
    case "--version":
      console.log(`flock ${FLOCK_VERSION} (deno ${Deno.version.deno})`);
      return 0;
    case undefined:
      // Run with no CNI_COMMAND and no mode: like a CNI plugin's "about" text, on stderr.
      console.error(USAGE);
      return 0;
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return 0;
    default:
      console.error(`flock: unknown mode ${JSON.stringify(mode)}\n\n${USAGE}`);
      return 2;
  }
}

/** A node:util parseArgs error (unknown flag, missing value, stray argument). */
function isFlagError(e: unknown): e is Error {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_");
}

/**
 * Runs the mode; a flag error a mode did not catch itself (`flock agent --bogus`) is the usage
 * error every mode gives: one line and exit 2, not an uncaught exception's stack trace.
 */
async function mainWithUsageErrors(args: string[]): Promise<number> {
  try {
    return await main(args);
  } catch (e) {
    if (!isFlagError(e)) throw e;
    console.error(`flock ${args[0]}: ${e.message}`);
    return 2;
  }
}

if (import.meta.main) Deno.exit(await mainWithUsageErrors(Deno.args));
