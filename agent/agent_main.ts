/** `flock agent`: argument parsing, start-up order and signal handling. */

import { parseArgs } from "node:util";
import { Agent, DEFAULT_STATE_DIR } from "./agent.ts";
import { DEFAULT_SOCKET } from "./protocol.ts";
import { loadNodeConfigFile } from "./config.ts";

/** Runs the agent until SIGTERM/SIGINT; returns the exit code. */
export async function agentMain(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      node: { type: "string" },
      config: { type: "string" },
      kubeconfig: { type: "string" },
      "state-dir": { type: "string", default: DEFAULT_STATE_DIR },
      socket: { type: "string", default: DEFAULT_SOCKET },
      netns: { type: "string" },
      "cooldown-ms": { type: "string" },
    },
    strict: true,
  });
  const nodeName = values.node ?? Deno.env.get("NODE_NAME") ?? Deno.hostname();
  if (!values.config) {
    console.error(
      "flock agent: cluster mode (NodeConfig from the API server) is not implemented yet; " +
        "pass --config FILE for standalone mode",
    );
    return 2;
  }
  const cooldown = values["cooldown-ms"];
  if (cooldown !== undefined && !/^\d+$/.test(cooldown)) {
    console.error(`flock agent: --cooldown-ms must be a whole number of milliseconds, got "${cooldown}"`);
    return 2;
  }
  const agent = new Agent({
    nodeName,
    stateDir: values["state-dir"]!,
    socketPath: values.socket!,
    netnsPath: values.netns,
    cooldownMs: cooldown === undefined ? undefined : Number(cooldown),
  });
  await agent.listen();
  let config;
  try {
    config = await loadNodeConfigFile(values.config);
  } catch (e) {
    agent.log({ level: "error", msg: "bad node config", error: (e as Error).message });
    await agent.close();
    return 1;
  }
  agent.configure(config);
  agent.log({ msg: "ready", node: nodeName });
  const { promise: stopped, resolve } = Promise.withResolvers<string>();
  for (const sig of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(sig, () => resolve(sig));
  const signal = await stopped;
  agent.log({ msg: "stopping", signal });
  await agent.close();
  return 0;
}
