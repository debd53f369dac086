/**
 * The JSON shapes `ip -j` (iproute2) prints, for tests that cross-check the kernel with a tool
 * independent of flock's own netlink decoder. Only the fields the tests read are declared; a
 * field iproute2 leaves out when it does not apply is optional.
 *
 * @module
 */

/** One entry of `ip -j [-d] link show`. */
export interface IpLink {
  ifname: string;
  ifindex: number;
  mtu: number;
  flags: string[];
  operstate: string;
  /** The MAC address. */
  address?: string;
  /** Set when the peer of a veth lives in another namespace. */
  link_netnsid?: number;
  /** With `-d`: the link type. */
  linkinfo?: { info_kind?: string };
  /** With `-d`: how IPv6 link-local addresses are generated. */
  inet6_addr_gen_mode?: string;
}

/** One address of an {@link IpAddr}. */
export interface IpAddrInfo {
  family: string;
  local: string;
  prefixlen: number;
  scope: string;
  nodad?: boolean;
  tentative?: boolean;
}

/** One entry of `ip -j addr show`. */
export interface IpAddr {
  ifname: string;
  addr_info: IpAddrInfo[];
}

/** One next hop of a multipath {@link IpRoute}. */
export interface IpNexthop {
  dev: string;
  gateway?: string;
  flags?: string[];
}

/** One entry of `ip -j route show`. */
export interface IpRoute {
  dst: string;
  dev?: string;
  gateway?: string;
  /** A name from /etc/iproute2/rt_protos, or the number when it has none. */
  protocol?: string | number;
  scope?: string;
  type?: string;
  flags?: string[];
  /** Present instead of `dev`/`gateway` on a multipath route. */
  nexthops?: IpNexthop[];
}
