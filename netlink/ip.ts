/**
 * IP address and prefix parsing, formatting and arithmetic for both families.
 *
 * Addresses are kept as `{ family, bytes }` so they go straight onto the wire;
 * arithmetic goes through `bigint` so IPv6 and IPv4 share one code path.
 */

/** Address family numbers as the kernel knows them. */
export const AF_INET = 2;
export const AF_INET6 = 10;
export type Family = typeof AF_INET | typeof AF_INET6;

/** An IP address in network byte order. */
export interface IP {
  family: Family;
  bytes: Uint8Array;
}

/** An address with a prefix length, e.g. `fd00::/64`. */
export interface Prefix {
  ip: IP;
  len: number;
}

/** Raised for text that is not an address or prefix of the expected shape. */
export class InvalidAddressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidAddressError";
  }
}

/** Number of bytes of an address of the family. */
export function familyBytes(family: Family): number {
  return family === AF_INET ? 4 : 16;
}

/** Number of bits of an address of the family. */
export function familyBits(family: Family): number {
  return family === AF_INET ? 32 : 128;
}

function parseV4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseV6(text: string): Uint8Array | undefined {
  if (text.length < 2 || text.length > 45 || text.includes("%")) return undefined;
  let tail: Uint8Array | undefined;
  let body = text;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".", lastColon)) {
    tail = parseV4(text.slice(lastColon + 1));
    if (!tail) return undefined;
    body = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = body.split("::");
  if (halves.length > 2) return undefined;
  const group = (s: string) => (s === "" ? [] : s.split(":"));
  const head = group(halves[0]);
  const rest = halves.length === 2 ? group(halves[1]) : [];
  const total = head.length + rest.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return undefined;
  const words = [...head, ...new Array(8 - total).fill("0"), ...rest];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(words[i])) return undefined;
    const n = parseInt(words[i], 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  }
  if (tail) out.set(tail, 12);
  return out;
}

/** Parses an IPv4 or IPv6 address; `undefined` when the text is neither. */
export function tryParseIP(text: string): IP | undefined {
  if (typeof text !== "string") return undefined;
  if (text.includes(":")) {
    const bytes = parseV6(text);
    return bytes ? { family: AF_INET6, bytes } : undefined;
  }
  const bytes = parseV4(text);
  return bytes ? { family: AF_INET, bytes } : undefined;
}

/** Parses an IPv4 or IPv6 address, throwing {@link InvalidAddressError}. */
export function parseIP(text: string): IP {
  const ip = tryParseIP(text);
  if (!ip) throw new InvalidAddressError(`not an IP address: ${JSON.stringify(text)}`);
  return ip;
}

/** Parses `addr/len`. With `strict`, host bits must be zero. */
export function parsePrefix(text: string, strict = false): Prefix {
  if (typeof text !== "string") throw new InvalidAddressError(`not a prefix: ${String(text)}`);
  const slash = text.indexOf("/");
  if (slash < 0) {
    throw new InvalidAddressError(`not a prefix (no /length): ${JSON.stringify(text)}`);
  }
  const ip = tryParseIP(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!ip || !/^(0|[1-9][0-9]{0,2})$/.test(lenText)) {
    throw new InvalidAddressError(`not a prefix: ${JSON.stringify(text)}`);
  }
  const len = Number(lenText);
  if (len > familyBits(ip.family)) {
    throw new InvalidAddressError(`prefix length ${len} too long in ${JSON.stringify(text)}`);
  }
  const prefix = { ip, len };
  if (strict && !ipEqual(networkOf(prefix), ip)) {
    throw new InvalidAddressError(
      `${text} has host bits set; the network is ${formatPrefix(canonicalPrefix(prefix))}`,
    );
  }
  return prefix;
}

/** Formats an address in its canonical text form (RFC 5952 for IPv6). */
export function formatIP(ip: IP): string {
  const b = ip.bytes;
  if (ip.family === AF_INET) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((b[i] << 8) | b[i + 1]);
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

/** Formats `addr/len`. */
export function formatPrefix(p: Prefix): string {
  return `${formatIP(p.ip)}/${p.len}`;
}

/** The address as an unsigned integer. */
export function ipToBigInt(ip: IP): bigint {
  let n = 0n;
  for (const byte of ip.bytes) n = (n << 8n) | BigInt(byte);
  return n;
}

/** The address of the family with the integer value `n`. */
export function bigIntToIP(family: Family, n: bigint): IP {
  const size = familyBytes(family);
  const bytes = new Uint8Array(size);
  for (let i = size - 1; i >= 0; i--) {
    bytes[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return { family, bytes };
}

/** Whether two addresses are the same. */
export function ipEqual(a: IP, b: IP): boolean {
  if (a.family !== b.family) return false;
  for (let i = 0; i < a.bytes.length; i++) if (a.bytes[i] !== b.bytes[i]) return false;
  return true;
}

/** The first address of the prefix (host bits cleared). */
export function networkOf(p: Prefix): IP {
  const bits = familyBits(p.ip.family);
  const hostBits = BigInt(bits - p.len);
  const n = (ipToBigInt(p.ip) >> hostBits) << hostBits;
  return bigIntToIP(p.ip.family, n);
}

/** The prefix with its host bits cleared. */
export function canonicalPrefix(p: Prefix): Prefix {
  return { ip: networkOf(p), len: p.len };
}

/** Number of addresses in the prefix. */
export function prefixSize(p: Prefix): bigint {
  return 1n << BigInt(familyBits(p.ip.family) - p.len);
}

/** Whether `ip` lies inside `p`. */
export function prefixContains(p: Prefix, ip: IP): boolean {
  if (p.ip.family !== ip.family) return false;
  const hostBits = BigInt(familyBits(ip.family) - p.len);
  return (ipToBigInt(ip) >> hostBits) === (ipToBigInt(p.ip) >> hostBits);
}

/** Whether `inner` lies wholly inside `outer`. */
export function prefixCovers(outer: Prefix, inner: Prefix): boolean {
  return inner.len >= outer.len && prefixContains(outer, inner.ip);
}

/** The host prefix (/32 or /128) of an address. */
export function hostPrefix(ip: IP): Prefix {
  return { ip, len: familyBits(ip.family) };
}

/** Human name of a family, for messages. */
export function familyName(family: Family): string {
  return family === AF_INET ? "IPv4" : "IPv6";
}
