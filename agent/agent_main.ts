/** `flock agent`: argument parsing, start-up order and signal handling. */

import { parseArgs } from "node:util";
import { Agent } from "./agent.ts";
import { DEFAULT_STATE_DIR } from "./store.ts";
import { DEFAULT_SOCKET } from "./protocol.ts";
import { loadNodeConfigFile } from "./config.ts";
import { createLogger, isLogLevel, LOG_LEVELS } from "./logger.ts";
import {
  DEFAULT_HTTP_ADDRESS,
  type HttpEndpoint,
  parseListenAddress,
  startHttpEndpoint,
} from "./http_server.ts";
import type { ClusterMode } from "./kube/cluster.ts";
import { SHUTDOWN_STEP_MS, stopWithin } from "./shutdown.ts";

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
      // Cluster mode: how long to wait for the NodeConfig before using Node.spec.podCIDRs.
      "nodeconfig-wait-ms": { type: "string" },
      // Probes and metrics; "off" (or "") disables the endpoint.
      http: { type: "string", default: DEFAULT_HTTP_ADDRESS },
      "log-level": { type: "string", default: "info" },
      // BIRD to drive: bird.conf is rendered to --bird-config and applied via --bird-socket.
      "bird-config": { type: "string" },
      "bird-socket": { type: "string" },
      birdc: { type: "string" },
    },
    strict: true,
  });
  const nodeName = values.node ?? Deno.env.get("NODE_NAME") ?? Deno.hostname();
  const cooldown = values["cooldown-ms"];
  if (cooldown !== undefined && !/^\d+$/.test(cooldown)) {
    console.error(
      `flock agent: --cooldown-ms must be a whole number of milliseconds, got "${cooldown}"`,
    );
    return 2;
  }
  const level = values["log-level"];
  if (!isLogLevel(level)) {
    console.error(`flock agent: --log-level must be one of ${LOG_LEVELS.join(", ")}`);
    return 2;
  }
  const httpText = values.http === "off" ? "" : values.http!;
  let httpAddress;
  try {
    httpAddress = httpText ? parseListenAddress(httpText) : undefined;
  } catch (e) {
    console.error(`flock agent: --http: ${(e as Error).message}`);
    return 2;
  }
  if ((values["bird-config"] === undefined) !== (values["bird-socket"] === undefined)) {
    console.error("flock agent: --bird-config and --bird-socket go together");
    return 2;
  }
  const bird = values["bird-config"]
    ? {
      configPath: values["bird-config"],
      socketPath: values["bird-socket"]!,
      birdcPath: values.birdc,
    }
    : undefined;
  const log = createLogger({ level });
  // Cluster mode (no --config): the Kubernetes client is loaded here and only here.
  let cluster: ClusterMode | undefined;
  if (!values.config) {
    const { openClusterMode, ClusterUsageError } = await import("./kube/cluster_main.ts");
    try {
      cluster = openClusterMode({
        nodeName,
        kubeconfig: values.kubeconfig,
        waitForConfigMs: values["nodeconfig-wait-ms"],
        log,
      });
    } catch (e) {
      if (!(e instanceof ClusterUsageError)) throw e;
      console.error(`flock agent: ${e.message}`);
      return 2;
    }
  }
  const agent = new Agent({
    bird,
    log,
    annotationsFor: cluster && ((ns, name, uid) => cluster.annotationsFor(ns, name, uid)),
    onAttachmentsChanged: cluster && (() => cluster.attachmentsChanged()),
    nodeName,
    stateDir: values["state-dir"]!,
    socketPath: values.socket!,
    netnsPath: values.netns,
    cooldownMs: cooldown === undefined ? undefined : Number(cooldown),
  });
  if (cluster) {
    agent.statusHooks.routerIdConflicts = () => cluster.routerIdConflicts;
    agent.statusHooks.configProblem = () => cluster.configProblem;
  }
  // Registered first: SIGHUP's default action ends the process, which an operator sending it to
  // reload (or to a cluster-mode agent, whose config is the NodeConfig object) does not expect.
  Deno.addSignalListener("SIGHUP", () => {
    if (!values.config) {
      agent.log({ msg: "SIGHUP ignored: in cluster mode the NodeConfig object is the config" });
    } else if (!agent.node) {
      agent.log({ level: "warn", msg: "SIGHUP ignored: the node is not configured yet" });
    } else {
      // Never rejects: it logs its own failures.
      void reloadRouting(agent, values.config);
    }
  });
  await agent.listen();
  let http: HttpEndpoint | undefined;
  if (httpAddress) {
    try {
      http = await startHttpEndpoint(httpAddress, {
        notReadyReason: () => agent.notReadyReason(),
        notLiveReason: () => agent.health.fatalProblem(),
        metrics: () =>
          agent.metrics?.encode((metric, e) =>
            agent.log({ level: "warn", msg: "metrics collector failed", metric, error: String(e) })
          ) ?? Promise.resolve(""),
      }, agent.log);
      const { hostname, port } = http.address;
      agent.log({ msg: "http endpoint listening", address: `${hostname}:${port}` });
    } catch (e) {
      agent.log({ level: "error", msg: "cannot start the http endpoint", error: String(e) });
      await agent.close();
      return 1;
    }
  }
  if (!values.config) {
    const fatal = Promise.withResolvers<string>();
    cluster!.start(agent, (e) => {
      agent.log({ level: "error", msg: "cannot configure the node", error: String(e) });
      fatal.resolve("error");
    });
    const signal = await Promise.race([stopSignal(), fatal.promise]);
    const stopping = performance.now();
    agent.log({ msg: "stopping", signal });
    // Bounded: the API server may be down (see shutdown.ts).
    await stopWithin("cluster", SHUTDOWN_STEP_MS.cluster, () => cluster!.stop(), log);
    await stopWithin("http", SHUTDOWN_STEP_MS.http, () => http?.close() ?? Promise.resolve(), log);
    await stopWithin("agent", SHUTDOWN_STEP_MS.agent, () => agent.close(), log);
    agent.log({ msg: "stopped", ms: Math.round(performance.now() - stopping) });
    return signal === "error" ? 1 : 0;
  }
  let config;
  try {
    config = await loadNodeConfigFile(values.config);
  } catch (e) {
    agent.log({ level: "error", msg: "bad node config", error: (e as Error).message });
    await http?.close();
    await agent.close();
    return 1;
  }
  try {
    await agent.configure(config);
  } catch (e) {
    // An unusable state dir (read-only, not a directory) or store: one error line, as in
    // cluster mode, not an uncaught exception.
    agent.log({ level: "error", msg: "cannot configure the node", error: String(e) });
    await http?.close();
    await agent.close();
    return 1;
  }
  agent.log({ msg: "ready", node: nodeName });
  // From now on SIGHUP re-reads the config file and applies BGP changes without touching pods.
  const signal = await stopSignal();
  const stopping = performance.now();
  agent.log({ msg: "stopping", signal });
  await stopWithin("http", SHUTDOWN_STEP_MS.http, () => http?.close() ?? Promise.resolve(), log);
  await stopWithin("agent", SHUTDOWN_STEP_MS.agent, () => agent.close(), log);
  agent.log({ msg: "stopped", ms: Math.round(performance.now() - stopping) });
  return 0;
}

/** Resolves with the name of the first SIGTERM or SIGINT. */
function stopSignal(): Promise<string> {
  const { promise, resolve } = Promise.withResolvers<string>();
  for (const sig of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(sig, () => resolve(sig));
  return promise;
}

async function reloadRouting(agent: Agent, path: string): Promise<void> {
  try {
    const applied = await agent.reconfigureRouting(await loadNodeConfigFile(path));
    agent.log(
      applied
        ? { msg: "config reloaded (bgp)" }
        : { level: "warn", msg: "config changed outside bgp: restart the agent to apply it" },
    );
  } catch (e) {
    agent.log({ level: "error", msg: "config reload failed", error: (e as Error).message });
  }
}
