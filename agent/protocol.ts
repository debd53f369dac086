/**
 * The wire contract between the CNI plugin (`cni.ts`) and the agent's unix-socket RPC.
 *
 * This module is imported on the CNI exec path, so it must import nothing.
 * Framing: the plugin connects, writes one JSON request followed by `\n`, and reads one JSON
 * response followed by `\n`; then both sides close.
 */

/** The verbs the agent serves. VERSION is answered by the plugin itself. */
export type RpcCommand = "ADD" | "DEL" | "CHECK" | "GC" | "STATUS";

/** One CNI invocation forwarded to the agent. */
export interface RpcRequest {
  command: RpcCommand;
  /** CNI_CONTAINERID ("" for GC and STATUS). */
  containerId: string;
  /** CNI_NETNS ("" when absent, e.g. DEL after the sandbox is gone). */
  netns: string;
  /** CNI_IFNAME ("" for GC and STATUS). */
  ifname: string;
  /** CNI_ARGS, unparsed. */
  args: string;
  /** The network configuration the runtime gave on stdin, parsed. */
  config: Record<string, unknown>;
}

/** A CNI error as the spec defines it. */
export interface CniErrorBody {
  code: number;
  msg: string;
  details?: string;
}

/** The agent's answer: the Result (or nothing, for DEL/CHECK/GC/STATUS) or an error. */
export type RpcResponse =
  | { ok: true; result?: Record<string, unknown> }
  | { ok: false; error: CniErrorBody };

/** CNI error codes used by flock (spec §"Error" plus libcni's 8). */
export const CniCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodingFailure: 6,
  invalidConfig: 7,
  invalidNetns: 8,
  tryAgainLater: 11,
  notAvailable: 50,
  limitedConnectivity: 51,
  internal: 999,
} as const;

/** An error that carries its CNI code; thrown anywhere on the request path. */
export class CniError extends Error {
  constructor(readonly code: number, msg: string, readonly details?: string) {
    super(msg);
    this.name = "CniError";
  }

  /** The body printed on stdout / sent over the socket. */
  toBody(): CniErrorBody {
    return this.details === undefined
      ? { code: this.code, msg: this.message }
      : { code: this.code, msg: this.message, details: this.details };
  }
}

/** CNI spec versions flock accepts on input. */
export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;

/** Default path of the agent's RPC socket. */
export const DEFAULT_SOCKET = "/run/flock/flock.sock";
