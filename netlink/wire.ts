/**
 * The netlink wire format: message headers, family headers and (nested)
 * attributes, encoded into one growable buffer and decoded as zero-copy views.
 * Pure code — no system calls — so it is unit-tested against captured bytes.
 */

import { NLA_F_NESTED, NLA_TYPE_MASK, NLMSG_HDRLEN } from "./consts.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Rounds up to the 4-byte netlink alignment. */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

/**
 * Builds one netlink message: a 16-byte header, a family header, attributes.
 * Nested attributes are opened with {@link beginNested} and closed with {@link endNested}.
 */
export class MessageWriter {
  #buf: Uint8Array;
  #view: DataView;
  #len = 0;

  constructor(type: number, flags: number, capacity = 256) {
    this.#buf = new Uint8Array(capacity);
    this.#view = new DataView(this.#buf.buffer);
    this.#reserve(NLMSG_HDRLEN);
    this.#view.setUint16(4, type, true);
    this.#view.setUint16(6, flags, true);
    this.#len = NLMSG_HDRLEN;
  }

  #reserve(extra: number): void {
    const need = this.#len + extra;
    if (need <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  /** Appends raw bytes (a family header such as ifinfomsg), padded to 4. */
  raw(bytes: Uint8Array): this {
    const padded = align4(bytes.length);
    this.#reserve(padded);
    this.#buf.set(bytes, this.#len);
    this.#buf.fill(0, this.#len + bytes.length, this.#len + padded);
    this.#len += padded;
    return this;
  }

  /** Appends one attribute with a raw payload. */
  attr(type: number, payload: Uint8Array): this {
    const len = 4 + payload.length;
    this.#reserve(align4(len));
    this.#view.setUint16(this.#len, len, true);
    this.#view.setUint16(this.#len + 2, type, true);
    this.#buf.set(payload, this.#len + 4);
    this.#buf.fill(0, this.#len + len, this.#len + align4(len));
    this.#len += align4(len);
    return this;
  }

  u8(type: number, value: number): this {
    return this.attr(type, Uint8Array.of(value));
  }

  u16(type: number, value: number): this {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, value, true);
    return this.attr(type, b);
  }

  u32(type: number, value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    return this.attr(type, b);
  }

  /** A NUL-terminated string attribute. */
  str(type: number, value: string): this {
    const bytes = encoder.encode(value);
    const b = new Uint8Array(bytes.length + 1);
    b.set(bytes);
    return this.attr(type, b);
  }

  /** Opens a nested attribute; returns the token for {@link endNested}. */
  beginNested(type: number, flagNested = true): number {
    const start = this.#len;
    this.#reserve(4);
    this.#view.setUint16(start + 2, flagNested ? type | NLA_F_NESTED : type, true);
    this.#len += 4;
    return start;
  }

  /** Closes a nested attribute opened at `start`. */
  endNested(start: number): this {
    this.#view.setUint16(start, this.#len - start, true);
    return this;
  }

  /** The message type (RTM_…) given to the constructor. */
  get type(): number {
    return this.#view.getUint16(4, true);
  }

  /** Finishes the message with its sequence number; returns the bytes. */
  finish(seq: number, pid = 0): Uint8Array {
    this.#view.setUint32(0, this.#len, true);
    this.#view.setUint32(8, seq >>> 0, true);
    this.#view.setUint32(12, pid >>> 0, true);
    return this.#buf.subarray(0, this.#len);
  }
}

/** One decoded netlink message; `body` is a view into the receive buffer. */
export interface NetlinkMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  body: Uint8Array;
}

/** Splits a datagram into messages. Truncated trailing data is an error. */
export function parseMessages(data: Uint8Array): NetlinkMessage[] {
  const out: NetlinkMessage[] = [];
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let off = 0;
  while (off + NLMSG_HDRLEN <= data.length) {
    const len = view.getUint32(off, true);
    if (len < NLMSG_HDRLEN || off + len > data.length) {
      throw new Error(`netlink: malformed message (length ${len} at offset ${off})`);
    }
    out.push({
      type: view.getUint16(off + 4, true),
      flags: view.getUint16(off + 6, true),
      seq: view.getUint32(off + 8, true),
      pid: view.getUint32(off + 12, true),
      body: data.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  if (off < data.length) {
    throw new Error(`netlink: truncated message (${data.length - off} bytes at offset ${off})`);
  }
  return out;
}

/**
 * Attributes by type (flags masked off). A type repeated keeps its first
 * occurrence, which is what every attribute flock reads expects.
 */
export type Attributes = Map<number, Uint8Array>;

/** Parses a run of attributes (after the family header). */
export function parseAttributes(data: Uint8Array): Attributes {
  const attrs: Attributes = new Map();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let off = 0;
  while (off + 4 <= data.length) {
    const len = view.getUint16(off, true);
    if (len < 4 || off + len > data.length) break;
    const type = view.getUint16(off + 2, true) & NLA_TYPE_MASK;
    if (!attrs.has(type)) attrs.set(type, data.subarray(off + 4, off + len));
    off += align4(len);
  }
  return attrs;
}

/** Reads a u8 attribute payload; undefined when it is missing or short. */
export function readU8(b: Uint8Array | undefined): number | undefined {
  return b && b.length >= 1 ? b[0] : undefined;
}

/** Reads a u32 attribute payload (native order, little-endian here); undefined when short. */
export function readU32(b: Uint8Array | undefined): number | undefined {
  return b && b.length >= 4
    ? new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true)
    : undefined;
}

/** Reads an s32 attribute payload (e.g. a netns id, -1 for none); undefined when short. */
export function readI32(b: Uint8Array | undefined): number | undefined {
  return b && b.length >= 4
    ? new DataView(b.buffer, b.byteOffset, b.byteLength).getInt32(0, true)
    : undefined;
}

/** Reads a NUL-terminated string attribute. */
export function readString(b: Uint8Array | undefined): string | undefined {
  if (!b) return undefined;
  const nul = b.indexOf(0);
  return decoder.decode(nul >= 0 ? b.subarray(0, nul) : b);
}

/** Formats a hardware address attribute as `aa:bb:…`. */
export function formatMac(b: Uint8Array | undefined): string {
  if (!b) return "";
  let s = "";
  for (let i = 0; i < b.length; i++) s += (i ? ":" : "") + b[i].toString(16).padStart(2, "0");
  return s;
}

/** Little helpers for the fixed family headers. */
export function ifinfomsg(family: number, index: number, flags = 0, change = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint8(0, family);
  v.setInt32(4, index, true);
  v.setUint32(8, flags, true);
  v.setUint32(12, change, true);
  return b;
}

export function ifaddrmsg(
  family: number,
  prefixLen: number,
  flags: number,
  scope: number,
  index: number,
): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint8(0, family);
  v.setUint8(1, prefixLen);
  v.setUint8(2, flags & 0xff);
  v.setUint8(3, scope);
  v.setUint32(4, index, true);
  return b;
}

export interface RtmsgFields {
  family: number;
  dstLen: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  flags?: number;
}

export function rtmsg(f: RtmsgFields): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  v.setUint8(0, f.family);
  v.setUint8(1, f.dstLen);
  v.setUint8(4, f.table > 255 ? 252 /* RT_TABLE_COMPAT; real id in RTA_TABLE */ : f.table);
  v.setUint8(5, f.protocol);
  v.setUint8(6, f.scope);
  v.setUint8(7, f.type);
  v.setUint32(8, f.flags ?? 0, true);
  return b;
}
