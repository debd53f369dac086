/**
 * Validation of one CNI invocation (environment + stdin), shared by the plugin and the agent.
 *
 * The plugin validates before it forwards; the agent validates again because its socket also
 * takes requests that never went through the plugin. Both must reject the same inputs with the
 * same CNI codes, so the rules live here once. On the CNI exec path: imports only protocol.ts.
 *
 * @module
 */

import {
  CniCode,
  CniError,
  type RpcCommand,
  type RpcRequest,
  SUPPORTED_VERSIONS,
} from "./protocol.ts";

/** The verbs forwarded to the agent (VERSION is answered by the plugin itself). */
export const RPC_COMMANDS: readonly RpcCommand[] = ["ADD", "DEL", "CHECK", "GC", "STATUS"];

/** CNI version used when the runtime gave none we could read (VERSION, error replies). */
export const DEFAULT_CNI_VERSION = "1.1.0";

/** Linux IFNAMSIZ minus the terminating NUL. */
const MAX_IFNAME_BYTES = 15;

/** The spec's pattern for CNI_CONTAINERID and for the network configuration's `name`. */
const SPEC_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/;

/**
 * Whether `name` is a network name the CNI spec allows (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`); libcni
 * and podman refuse anything else, and flock stores it per attachment.
 */
export function isValidNetworkName(name: string): boolean {
  return SPEC_NAME_PATTERN.test(name);
}

/** Whether `command` is a verb the agent serves. */
export function isRpcCommand(command: unknown): command is RpcCommand {
  return typeof command === "string" && (RPC_COMMANDS as readonly string[]).includes(command);
}

/**
 * Parses the network configuration from stdin.
 *
 * @throws {CniError} code 6 when stdin is not a JSON object.
 */
export function parseConfig(stdin: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(stdin);
  } catch (e) {
    const reason = stdin.trim() === "" ? "stdin is empty" : (e as Error).message;
    throw new CniError(
      CniCode.decodingFailure,
      "failed to decode the network configuration on stdin",
      reason,
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new CniError(
      CniCode.decodingFailure,
      "failed to decode the network configuration on stdin",
      `expected a JSON object, got ${describe(value)}`,
    );
  }
  return value as Record<string, unknown>;
}

/**
 * The `cniVersion` the runtime asked for, if stdin carries a readable one; for VERSION replies
 * and for the `cniVersion` of error replies. Never throws.
 */
export function requestedVersion(stdin: string): string | undefined {
  try {
    const value = JSON.parse(stdin);
    const version = value?.cniVersion;
    return typeof version === "string" && version !== "" ? version : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Checks the config's `cniVersion` and `name`.
 *
 * @throws {CniError} code 1 for a missing or unsupported version, code 7 for a missing name or
 *   one off the spec's pattern.
 */
export function validateConfig(config: Record<string, unknown>): void {
  const version = config.cniVersion;
  if (typeof version !== "string" || version === "") {
    throw new CniError(
      CniCode.incompatibleVersion,
      "the network configuration has no cniVersion",
      `flock supports ${SUPPORTED_VERSIONS.join(", ")}`,
    );
  }
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(
      CniCode.incompatibleVersion,
      `incompatible CNI versions: the config's cniVersion is ${JSON.stringify(version)}`,
      `flock supports ${SUPPORTED_VERSIONS.join(", ")}`,
    );
  }
  if (typeof config.name !== "string" || config.name === "") {
    throw new CniError(CniCode.invalidConfig, "the network configuration has no name");
  }
  // libcni checks this before it execs a plugin; a request straight to the agent's socket (or a
  // hand-run plugin) does not pass libcni, and the name is stored with every attachment.
  if (!isValidNetworkName(config.name)) {
    throw new CniError(
      CniCode.invalidConfig,
      "the network configuration's name is invalid: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$ " +
        "(letters, digits, '_', '.' and '-', starting with a letter or digit)",
      JSON.stringify(config.name),
    );
  }
}

/**
 * Checks CNI_CONTAINERID as libcni does: non-empty, alphanumeric plus `_.-`.
 *
 * @throws {CniError} code 4 naming the variable.
 */
export function validateContainerId(id: string | undefined): string {
  if (id === undefined || id === "") {
    throw new CniError(CniCode.invalidEnvironment, "CNI_CONTAINERID is required");
  }
  if (!SPEC_NAME_PATTERN.test(id)) {
    throw new CniError(
      CniCode.invalidEnvironment,
      "CNI_CONTAINERID is invalid: it must be alphanumeric and may contain '_', '.' and '-'",
      JSON.stringify(id),
    );
  }
  return id;
}

/**
 * Checks CNI_IFNAME as libcni does: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace; and
 * no `%`, which the kernel would expand.
 *
 * @throws {CniError} code 4 naming the variable.
 */
export function validateIfname(ifname: string | undefined): string {
  if (ifname === undefined || ifname === "") {
    throw new CniError(CniCode.invalidEnvironment, "CNI_IFNAME is required");
  }
  const bad = (why: string) =>
    new CniError(
      CniCode.invalidEnvironment,
      `CNI_IFNAME is invalid: ${why}`,
      JSON.stringify(ifname),
    );
  if (new TextEncoder().encode(ifname).length > MAX_IFNAME_BYTES) {
    throw bad(`longer than ${MAX_IFNAME_BYTES} bytes`);
  }
  if (ifname === "." || ifname === "..") throw bad("it must not be '.' or '..'");
  // \0 too: the kernel would silently truncate the name there.
  if (/[/:\s\0]/.test(ifname)) throw bad("it must not contain '/', ':', NUL or whitespace");
  // The kernel reads '%' as a pattern ("eth%d": the first free number), so the interface would
  // get another name than the Result reports.
  if (ifname.includes("%")) throw bad("it must not contain '%'");
  return ifname;
}

/**
 * Checks CNI_NETNS: required for ADD and CHECK, optional (may be "") for DEL; when given it
 * must be an absolute path, because the agent resolves it from a different working directory.
 *
 * @throws {CniError} code 4 naming the variable.
 */
export function validateNetns(netns: string | undefined, required: boolean): string {
  if (netns === undefined || netns === "") {
    if (required) throw new CniError(CniCode.invalidEnvironment, "CNI_NETNS is required");
    return "";
  }
  if (!netns.startsWith("/")) {
    throw new CniError(
      CniCode.invalidEnvironment,
      "CNI_NETNS is invalid: it must be an absolute path",
      JSON.stringify(netns),
    );
  }
  if (netns.includes("\0")) {
    throw new CniError(
      CniCode.invalidEnvironment,
      "CNI_NETNS is invalid: it contains a NUL byte",
      JSON.stringify(netns),
    );
  }
  return netns;
}

/**
 * Turns a CNI invocation into the request the agent serves.
 *
 * Order of checks: command (4), stdin decoding (6), cniVersion (1), name (7), then the
 * environment the verb needs (4). GC and STATUS need no container variables and get them as "".
 *
 * @param env the CNI_* variables (others are ignored)
 * @param stdin the network configuration as the runtime wrote it
 * @throws {CniError} with the CNI code for the first problem found
 */
export function parseCniInvocation(
  env: Record<string, string | undefined>,
  stdin: string,
): RpcRequest {
  const command = env.CNI_COMMAND;
  if (!isRpcCommand(command)) {
    throw new CniError(CniCode.invalidEnvironment, `unknown CNI_COMMAND: ${command ?? ""}`);
  }
  const config = parseConfig(stdin);
  validateConfig(config);
  const args = env.CNI_ARGS ?? "";
  if (command === "GC" || command === "STATUS") {
    return { command, containerId: "", netns: "", ifname: "", args, config };
  }
  const containerId = validateContainerId(env.CNI_CONTAINERID);
  const ifname = validateIfname(env.CNI_IFNAME);
  const netns = validateNetns(env.CNI_NETNS, command !== "DEL");
  return { command, containerId, netns, ifname, args, config };
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}
