/** `flock status`: asks the local agent whether it is ready. */

import { parseArgs } from "node:util";
import { callAgent } from "../cni.ts";
import { DEFAULT_SOCKET } from "./protocol.ts";

/** Prints the agent's readiness; exit code 0 only when it is ready. */
export async function statusMain(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { socket: { type: "string", default: DEFAULT_SOCKET }, json: { type: "boolean" } },
    strict: true,
  });
  const response = await callAgent(values.socket!, {
    command: "STATUS",
    containerId: "",
    netns: "",
    ifname: "",
    args: "",
    config: { cniVersion: "1.1.0", name: "flock" },
  }, 5_000);
  const ready = response.ok;
  if (values.json) {
    console.log(JSON.stringify({ ready, error: response.ok ? undefined : response.error }));
  } else {
    console.log(ready ? "ready" : `not ready: ${response.ok ? "" : response.error.msg}`);
  }
  return ready ? 0 : 1;
}
