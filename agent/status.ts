/**
 * `flock status`: asks the local agent over its unix socket for the whole status snapshot and
 * prints it as tables (default) or JSON (`--json`).
 *
 * Exit codes: 0 ready, 1 not ready, 3 agent unreachable or the answer unusable (2 stays the
 * usage error of every flock mode).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { callAgent } from "../cni.ts";
import { DEFAULT_SOCKET } from "./protocol.ts";
import { STATUS_DETAIL_KEY, type StatusSnapshot } from "./status_snapshot.ts";
import { renderStatus } from "./status_render.ts";

/** Exit code when the agent cannot be asked. */
export const EXIT_UNREACHABLE = 3;

/** Runs `flock status`; returns the exit code. */
export async function statusMain(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        socket: { type: "string", default: DEFAULT_SOCKET },
        json: { type: "boolean", default: false },
        "timeout-ms": { type: "string", default: "10000" },
      },
      strict: true,
    }));
  } catch (e) {
    console.error(`flock status: ${(e as Error).message}`);
    return 2;
  }
  const timeout = Number(values["timeout-ms"]);
  const response = await callAgent(values.socket!, {
    command: "STATUS",
    containerId: "",
    netns: "",
    ifname: "",
    args: "",
    config: { cniVersion: "1.1.0", name: "flock", [STATUS_DETAIL_KEY]: true },
  }, Number.isFinite(timeout) && timeout > 0 ? timeout : 10_000);
  if (!response.ok || !response.result) {
    const error = response.ok
      ? { code: 0, msg: "the agent answered without a status (an older agent?)" }
      : response.error;
    if (values.json) {
      console.log(JSON.stringify({ ready: false, reachable: false, socket: values.socket, error }));
    } else {
      console.log(`flock status: cannot ask the agent on ${values.socket}: ${error.msg}`);
      if (error.details) console.log(`  ${error.details}`);
    }
    return EXIT_UNREACHABLE;
  }
  const snapshot = response.result as unknown as StatusSnapshot;
  if (values.json) console.log(JSON.stringify(snapshot, null, 2));
  else console.log(renderStatus(snapshot).trimEnd());
  return snapshot.ready ? 0 : 1;
}
