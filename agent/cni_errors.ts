/**
 * The one mapping from a failure on the request path to the CNI error the runtime gets: the
 * agent's request handling and the RPC server both use it, so a failure gets the same code
 * whichever layer catches it.
 *
 * @module
 */

import { kernelBusyCniError } from "./kernel_busy.ts";
import { CniCode, CniError } from "./protocol.ts";

/**
 * The CNI error for `e`: a CniError as it is; a bad netns path code 8; bad input to the datapath
 * or netlink code 4; an interface name taken by something else code 7; a kernel that gave no
 * whole answer for now code 11 (kernel_busy.ts); anything else code 999 naming the error.
 */
export function toCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  const err = e as Error | undefined;
  // By name, not class: DatapathInputError and InterfaceConflictError live in datapath.ts, which
  // this module need not load (netlink/errors.ts is loaded anyway, through kernel_busy.ts).
  const name = err?.name ?? "Error";
  if (name === "NetnsError") return new CniError(CniCode.invalidNetns, err!.message);
  if (name === "DatapathInputError" || name === "NetlinkArgumentError") {
    return new CniError(CniCode.invalidEnvironment, err!.message);
  }
  if (name === "InterfaceConflictError") return new CniError(CniCode.invalidConfig, err!.message);
  const busy = kernelBusyCniError(e);
  if (busy) return busy;
  return new CniError(CniCode.internal, `${name}: ${err?.message ?? String(e)}`);
}
