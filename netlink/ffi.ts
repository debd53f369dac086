/**
 * The few libc calls flock needs, through `Deno.dlopen`, plus errno and the
 * network-namespace switch.
 *
 * Every call here is synchronous, so it runs on the JS main thread (see
 * notes/deno-ffi.md §1): `setns` switches only that thread, and as long as no
 * `await` sits between the two `setns` calls no other JS can observe the switch.
 */

const libc = Deno.dlopen("libc.so.6", {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  recvfrom: {
    parameters: ["i32", "buffer", "usize", "i32", "pointer", "pointer"],
    result: "isize",
  },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  // open(2) is variadic: (path, flags, mode) as fixed arguments is ABI-compatible on x86_64 and
  // aarch64 Linux (the callee reads the mode from the third argument register; without O_CREAT
  // it ignores it).
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  // The same calls on a worker thread, for requests the kernel answers slowly (deleting a veth
  // waits for RCU grace periods, ~40 ms) that must not block the event loop. errno cannot be
  // read for these: it belongs to the worker thread.
  sendtoOffThread: {
    name: "sendto",
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
    result: "isize",
    nonblocking: true,
  },
  recvfromOffThread: {
    name: "recvfrom",
    parameters: ["i32", "buffer", "usize", "i32", "pointer", "pointer"],
    result: "isize",
    nonblocking: true,
  },
});

const sym = libc.symbols;
const errnoView = new Deno.UnsafePointerView(sym.__errno_location()!);

export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_ROUTE = 0;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_RCVTIMEO = 20;
export const SOL_NETLINK = 270;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
export const NETLINK_GET_STRICT_CHK = 12;
export const CLONE_NEWNET = 0x40000000;
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
/** open(2) fails with ELOOP on a symbolic link; arm64's value differs from x86_64's. */
export const O_NOFOLLOW = Deno.build.arch === "aarch64" ? 0o100000 : 0o400000;
/** open(2) fails with ENOTDIR unless the path is a directory; arm64's value differs too. */
export const O_DIRECTORY = Deno.build.arch === "aarch64" ? 0o40000 : 0o200000;
/** recv flag: return a datagram's real length even when it did not fit the buffer. */
export const MSG_TRUNC = 0x20;

export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENODEV = 19;
export const EINVAL = 22;
export const ELOOP = 40;
export const ERANGE = 34;
export const ENOBUFS = 105;
export const EMSGSIZE = 90;
export const EADDRNOTAVAIL = 99;
export const ENETUNREACH = 101;

/** The calling thread's errno; read it right after the failing call. */
export function errno(): number {
  return errnoView.getInt32(0);
}

/** The C library's text for an errno value. */
export function strerror(code: number): string {
  const p = sym.strerror(code);
  return p ? Deno.UnsafePointerView.getCString(p) : `errno ${code}`;
}

/** A failed system call, with its errno. */
export class SyscallError extends Error {
  constructor(readonly call: string, readonly errno: number, context?: string) {
    super(`${call}${context ? ` ${context}` : ""}: ${strerror(errno)} (errno ${errno})`);
    this.name = "SyscallError";
  }
}

function check(call: string, result: number | bigint, context?: string): number {
  const n = Number(result);
  if (n < 0) throw new SyscallError(call, errno(), context);
  return n;
}

const encoder = new TextEncoder();

function cString(text: string): Uint8Array {
  return encoder.encode(text + "\0");
}

/** open(2) a path; returns the fd. `mode` is used only with O_CREAT. */
export function openPath(path: string, flags = O_RDONLY | O_CLOEXEC, mode = 0): number {
  return check("open", sym.open(cString(path), flags, mode), path);
}

/**
 * open(2) a path that may well not be there (a netns path gone after a restart): the fd, or
 * undefined without an exception. Building a thrown {@link SyscallError} (strerror, a stack)
 * costs ~7 µs, a call ~3 µs: per record over a thousand records, that is most of the work.
 */
export function openPathOrNone(path: string, flags = O_RDONLY | O_CLOEXEC): number | undefined {
  const fd = sym.open(cString(path), flags, 0);
  return fd < 0 ? undefined : fd;
}

/** What {@linkcode fstatFd} reports of an open file. */
export interface FdStat {
  /** `st_mode`: the file type bits and the permission bits. */
  mode: number;
  uid: number;
}

/** The file-type bits of a mode, and a regular file's value of them. */
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;

const AT_EMPTY_PATH = 0x1000;
const STATX_TYPE_MODE_UID = 0x1 | 0x2 | 0x8;
const emptyPath = new Uint8Array(1);

/**
 * The type, mode and owner of the open file `fd` (statx(2) with AT_EMPTY_PATH: the same struct
 * layout on every architecture, unlike fstat's).
 */
export function fstatFd(fd: number): FdStat {
  const buf = new Uint8Array(256);
  check("statx", sym.statx(fd, emptyPath, AT_EMPTY_PATH, STATX_TYPE_MODE_UID, buf));
  const view = new DataView(buf.buffer);
  return { uid: view.getUint32(20, true), mode: view.getUint16(28, true) };
}

const STATX_INO = 0x100;
const identityBuf = new Uint8Array(256);
const identityView = new DataView(identityBuf.buffer);

/**
 * The identity of the open file `fd`, `major:minor:inode` of its device and inode (statx(2) with
 * AT_EMPTY_PATH): two fds of one file (a network namespace opened through two paths) agree. A
 * few µs, no path and no allocation per call beyond the string.
 */
export function fileIdentityOfFd(fd: number): string {
  check("statx", sym.statx(fd, emptyPath, AT_EMPTY_PATH, STATX_INO, identityBuf));
  const major = identityView.getUint32(136, true);
  const minor = identityView.getUint32(140, true);
  // Inode numbers stay far below 2^53: two halves, no BigInt.
  const inode = identityView.getUint32(36, true) * 2 ** 32 + identityView.getUint32(32, true);
  return `${major}:${minor}:${inode}`;
}

/** fchmod(2): sets the mode of the open file `fd` (never a path, so never through a link). */
export function fchmodFd(fd: number, mode: number): void {
  check("fchmod", sym.fchmod(fd, mode));
}

/** close(2), ignoring errors (nothing useful can be done about them). */
export function closeFd(fd: number): void {
  sym.close(fd);
}

/**
 * flock(2) on `fd` with `operation` (LOCK_EX, LOCK_NB, ...); 0 when it succeeded, else its errno
 * (a lock held elsewhere under LOCK_NB is EAGAIN, which is EWOULDBLOCK on Linux).
 */
export function flockFd(fd: number, operation: number): number {
  return sym.flock(fd, operation) === 0 ? 0 : errno();
}

/**
 * A raw rtnetlink socket in the calling thread's current network namespace; `groups` (RTMGRP_*
 * bits) subscribes it to those notifications.
 */
export function netlinkSocket(groups = 0): number {
  const fd = check("socket", sym.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  try {
    const addr = new Uint8Array(12);
    const view = new DataView(addr.buffer);
    view.setUint16(0, AF_NETLINK, true);
    view.setUint32(8, groups, true);
    check("bind", sym.bind(fd, addr, addr.length));
    return fd;
  } catch (e) {
    sym.close(fd);
    throw e;
  }
}

/** setsockopt(2) with an int value (or a raw buffer for structs). */
export function setSocketOption(
  fd: number,
  level: number,
  name: number,
  value: number | Uint8Array,
) {
  const buf = typeof value === "number" ? new Uint8Array(new Int32Array([value]).buffer) : value;
  check("setsockopt", sym.setsockopt(fd, level, name, buf, buf.length));
}

/** Sets SO_RCVTIMEO so a protocol mistake turns into an error instead of a hang. */
export function setReceiveTimeout(fd: number, ms: number): void {
  const tv = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1000)]);
  setSocketOption(fd, SOL_SOCKET, SO_RCVTIMEO, new Uint8Array(tv.buffer));
}

const kernelAddress = (() => {
  const a = new Uint8Array(12);
  new DataView(a.buffer).setUint16(0, AF_NETLINK, true);
  return a;
})();

/** Sends one datagram to the kernel. */
export function sendToKernel(fd: number, data: Uint8Array): void {
  for (;;) {
    const n = Number(sym.sendto(fd, data, BigInt(data.length), 0, kernelAddress, 12));
    if (n >= 0) return;
    const e = errno();
    if (e !== EINTR) throw new SyscallError("sendto", e);
  }
}

/**
 * Receives one datagram into `buf`; returns its real length. A result above `buf.length` means
 * the datagram did not fit: only its first `buf.length` bytes were kept, the rest is lost
 * (MSG_TRUNC makes netlink report the full size instead of the copied one).
 */
export function receive(fd: number, buf: Uint8Array): number {
  for (;;) {
    const n = Number(sym.recvfrom(fd, buf, BigInt(buf.length), MSG_TRUNC, null, null));
    if (n >= 0) return n;
    const e = errno();
    if (e !== EINTR) throw new SyscallError("recvfrom", e);
  }
}

/** recv flag: do not wait; EAGAIN when nothing is queued. */
const MSG_DONTWAIT = 0x40;

/**
 * Receives one queued datagram into `buf` without waiting: its real length (as
 * {@linkcode receive}), or `null` when nothing is queued.
 */
export function receiveQueued(fd: number, buf: Uint8Array): number | null {
  for (;;) {
    const n = Number(
      sym.recvfrom(fd, buf, BigInt(buf.length), MSG_TRUNC | MSG_DONTWAIT, null, null),
    );
    if (n >= 0) return n;
    const e = errno();
    if (e === EAGAIN) return null;
    if (e !== EINTR) throw new SyscallError("recvfrom", e);
  }
}

/**
 * {@linkcode sendToKernel} then one {@linkcode receive}, with both calls on a worker thread:
 * the event loop keeps running while the kernel works. `buf` must not be touched until the
 * promise settles. Throws a SyscallError without errno (see `sendtoOffThread`) on failure.
 * Returns the datagram's real length, as {@linkcode receive} does.
 */
export async function exchangeOffThread(
  fd: number,
  request: Uint8Array,
  buf: Uint8Array,
): Promise<number> {
  const sent = Number(
    await sym.sendtoOffThread(fd, request, BigInt(request.length), 0, kernelAddress, 12),
  );
  if (sent < 0) throw new SyscallError("sendto", 0, "(on a worker thread, errno unknown)");
  const n = Number(
    await sym.recvfromOffThread(fd, buf, BigInt(buf.length), MSG_TRUNC, null, null),
  );
  if (n < 0) throw new SyscallError("recvfrom", 0, "(on a worker thread, errno unknown)");
  return n;
}

/** Writes a whole small file (a /proc/sys knob) in the current namespace. */
export function writeFileSync(path: string, text: string): void {
  const fd = openPath(path, O_WRONLY | O_CLOEXEC);
  try {
    const data = encoder.encode(text);
    check("write", sym.write(fd, data, BigInt(data.length)), path);
  } finally {
    sym.close(fd);
  }
}

/** Reads a small file (a /proc/sys knob) in the current namespace. */
export function readFileSync(path: string): string {
  const fd = openPath(path);
  try {
    const buf = new Uint8Array(256);
    const n = check("read", sym.read(fd, buf, BigInt(buf.length)), path);
    return new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    sym.close(fd);
  }
}

/** The namespace this process started in; the main thread always returns here. */
const homeNetnsFd = openPath("/proc/thread-self/ns/net");

/**
 * Runs `fn` with the main thread inside the network namespace `nsFd`.
 *
 * `fn` must be synchronous: an `await` inside would let other JS run in the
 * wrong namespace. If switching back fails the process cannot trust any later
 * socket it opens, so it exits.
 */
export function withNetns<T>(nsFd: number, fn: () => T): T {
  if (sym.setns(nsFd, CLONE_NEWNET) < 0) {
    throw new SyscallError("setns", errno());
  }
  try {
    return fn();
  } finally {
    if (sym.setns(homeNetnsFd, CLONE_NEWNET) < 0) {
      console.error(`flock: cannot return to the home network namespace (errno ${errno()})`);
      Deno.exit(70);
    }
  }
}
