/**
 * Network namespace ids (RTM_GETNSID): the number by which a namespace knows another one, as a
 * veth's IFLA_LINK_NETNSID names the namespace of its other end. Asking it costs one open of the
 * namespace's path and one request on an existing socket, no socket in that namespace.
 *
 * @module
 */

import { closeFd, O_CLOEXEC, O_NONBLOCK, O_RDONLY, openPathOrNone } from "./ffi.ts";
import type { Handle } from "./handle.ts";
import { parseAttributes, readI32 } from "./wire.ts";

const RTM_GETNSID = 90;
const NETNSA_NSID = 1;
const NETNSA_FD = 3;
/** struct rtgenmsg (one byte, AF_UNSPEC), padded to the attributes' 4-byte alignment. */
const RTGENMSG = new Uint8Array(4);

/**
 * The id by which the handle's namespace knows the namespace at `path`; undefined when it has
 * none for it (the kernel gives one when a link of that namespace is shown to this one, as a
 * veth's other end is) or the path is gone.
 */
export function netnsIdOf(h: Handle, path: string): number | undefined {
  // Non-blocking: a FIFO at `path` would otherwise block the only JS thread for good.
  const fd = openPathOrNone(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd === undefined) return undefined;
  try {
    return netnsIdOfFd(h, fd, path);
  } finally {
    closeFd(fd);
  }
}

/**
 * {@link netnsIdOf} the namespace the open fd `fd` refers to (`what` names it in errors): no
 * open of its own, for a caller that holds the fd already.
 */
export function netnsIdOfFd(h: Handle, fd: number, what = `fd ${fd}`): number | undefined {
  const msg = h.message(RTM_GETNSID).raw(RTGENMSG).u32(NETNSA_FD, fd);
  const [reply] = h.execute(msg, `get the netns id of ${what}`);
  const id = reply && readI32(parseAttributes(reply.body.subarray(4)).get(NETNSA_NSID));
  // NETNSA_NSID_NOT_ASSIGNED is -1.
  return id === undefined || id < 0 ? undefined : id;
}
