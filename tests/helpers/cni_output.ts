/**
 * Checks on what the plugin prints: the CNI spec's error object and Result shape, as libcni
 * parses them from stdout.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SUPPORTED_VERSIONS } from "../../agent/protocol.ts";
import type { CniOutcome } from "./flock.ts";

/**
 * Asserts `r` is a CNI error as the spec prints it: exactly one JSON object on stdout with
 * `cniVersion`, `code`, `msg` and optional `details`, and a non-zero exit. `msg` is matched
 * against "msg: details".
 */
export function assertCniError(r: CniOutcome, code: number, msg: RegExp): void {
  const where = `stdout: ${r.stdout} stderr: ${r.stderr.slice(-500)}`;
  assert.notEqual(r.code, 0, `non-zero exit (${where})`);
  assert.equal(cniErrorProblem(r.json), undefined, `a spec error object (${where})`);
  assert.equal(r.stdout.trim().split("\n").length, 1, "stdout holds only the error JSON");
  assert.equal(r.json.code, code, `CNI code (${where})`);
  const details = r.json.details === undefined ? "" : `: ${r.json.details}`;
  assert.match(r.json.msg + details, msg);
}

/** Why `value` is not a spec error object, or undefined when it is one. */
export function cniErrorProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not an object";
  const { cniVersion, code, msg, details, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length) return `unexpected keys ${Object.keys(rest).join(", ")}`;
  // The version asked for is echoed, even one flock does not speak (libcni ignores it here).
  if (typeof cniVersion !== "string" || cniVersion === "") {
    return `cniVersion ${JSON.stringify(cniVersion)}`;
  }
  if (!Number.isInteger(code) || (code as number) < 1) return `code ${JSON.stringify(code)}`;
  if (typeof msg !== "string" || msg === "") return "msg is not a non-empty string";
  if (details !== undefined && typeof details !== "string") return "details is not a string";
  return undefined;
}

/** Why `value` is not an ADD Result (interfaces, ips, one on a sandbox interface), or undefined. */
export function cniResultProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not an object";
  const r = value as Record<string, unknown>;
  if (!(SUPPORTED_VERSIONS as readonly unknown[]).includes(r.cniVersion)) return "cniVersion";
  const interfaces = r.interfaces as { name?: unknown; sandbox?: unknown }[] | undefined;
  if (!Array.isArray(interfaces) || interfaces.length === 0) return "no interfaces";
  const ips = r.ips as { address?: unknown; interface?: unknown }[] | undefined;
  if (!Array.isArray(ips) || ips.length === 0) return "no ips";
  for (const ip of ips) {
    if (typeof ip.address !== "string" || !/^[0-9a-f:.]+\/\d+$/.test(ip.address)) {
      return `ip address ${JSON.stringify(ip.address)}`;
    }
    // An earlier plugin's address in a chained result may name no interface.
    if (ip.interface !== undefined && !interfaces[ip.interface as number]) {
      return `ip interface ${JSON.stringify(ip.interface)} names no interface`;
    }
  }
  const onSandbox = ips.some((ip) =>
    typeof interfaces[ip.interface as number]?.sandbox === "string"
  );
  return onSandbox ? undefined : "no ip on a sandbox interface";
}
