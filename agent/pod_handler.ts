/**
 * The pod lifecycle behind the CNI verbs (the seed's PodHandler):
 * annotations → IPAM → store(pending) → datapath → store(committed) → Result.
 *
 * ADD is idempotent on retry; DEL is symmetric and succeeds with the netns,
 * the record or both already gone. Every step that can fail undoes the steps
 * before it, so a failed ADD leaves nothing allocated.
 *
 * DEL through the RPC server answers before the pod's veth is gone: the kernel's deletion of a
 * veth waits ~40 ms for RCU grace periods. Before the answer the pod is off the network and
 * its record is durably `releasing`; the veth's deletion runs off the event loop, and only
 * then are its addresses released (so no other pod can get one while the old veth still
 * exists). The RPC server holds the container meanwhile; an ADD into the same netns (known by
 * its identity, whatever path names it) waits for it; a crash leaves a `releasing` record that
 * the start-up reconcile finishes.
 *
 * No release blocks the event loop on the kernel (STATUS and metrics keep being answered): the
 * other paths (GC, a DEL or ADD of a container whose release is stuck, the agent's sweep) delete
 * the veth off the event loop too, and answer once it is gone.
 */

import { formatIP, type IP, parseIP } from "../netlink/ip.ts";
import type { Link } from "../netlink/mod.ts";
import {
  type CheckExpectations,
  type Datapath,
  type ForeignVeth,
  hostIfaceCandidate,
  hostIfaceName,
  type PodInterfaces,
  type PodNetwork,
  type SetupOptions,
  VETH_DELETIONS_IN_FLIGHT,
} from "./datapath.ts";
import { CniCode, CniError, type RpcRequest, type RpcResponse } from "./protocol.ts";
import type { Attachment, Store, WithheldAddress } from "./store.ts";
import type { HoldWork } from "./rpc_server.ts";
import type { NodeConfig } from "./config.ts";
import {
  type FamilyRequest,
  parsePodAnnotations,
  pinnedAddressError,
  runtimeAddresses,
} from "./annotations.ts";
import { AddressInUseError, type AddressPool } from "./ipam.ts";
import {
  buildAddResult,
  chainResult,
  parsePrevResult,
  type PrevResult,
  readChainedResult,
} from "./cni_result.ts";
import type { AnycastRoutes } from "./anycast.ts";
import type { CrashHook } from "./crash_points.ts";
import type { VethDeleteDelay } from "./test_slow_delete.ts";
import type { AddFault, VethDeleteFault } from "./test_faults.ts";
import { forEachBounded } from "./bounded.ts";
import { sandboxMismatch } from "./sandbox_check.ts";
import { otherPodSides, setupOwnershipChecks } from "./veth_owner.ts";
import { isNetnsGone } from "./netns_path.ts";
import { NetnsIdentities, type NetnsIdentity } from "./netns_identity.ts";
import { type RelocateReport, UnknownNetnsRelocator } from "./netns_relocate.ts";
import { attachmentKey, storedRecordOf, storedRecordsOf } from "./attachment_key.ts";
import { freeUnroutedWithheld, withheldReason, withheldThrough } from "./withheld.ts";

/** CNI error code for a CHECK that found the datapath differing (plugin-specific range). */
export const CODE_CHECK_FAILED = 101;

/** What the handler needs from the agent. */
export interface PodHandlerDeps {
  store: Store;
  datapath: Datapath;
  node: NodeConfig;
  pool6?: AddressPool;
  pool4?: AddressPool;
  /** Annotations for a pod that the runtime did not pass (the Kubernetes informer). */
  lookupAnnotations?: (
    namespace: string,
    name: string,
    uid?: string,
  ) => Promise<Record<string, string> | undefined>;
  log: (fields: Record<string, unknown>) => void;
  now?: () => number;
  /** Keeps the anycast routes equal to the committed holders (anycast.ts). */
  anycast?: AnycastRoutes;
  /**
   * The host veths whose missing routes do not give back the addresses withheld through them
   * (a flap not repaired yet: HostSideRepair.unsettledVeths; see withheld.ts).
   */
  withheldUnsettled?: () => (hostIface: string) => boolean;
  /** Test-only: kills the agent at a named step (see crash_points.ts). */
  crashAt?: CrashHook;
  /**
   * Test-only: makes the veth deletions of releases (DEL, GC, sweep, a failed ADD's cleanup)
   * throw (test_faults.ts).
   */
  vethDeleteFault?: VethDeleteFault;
  /** Test-only: makes an ADD fail right after its datapath is built (test_faults.ts). */
  addFault?: AddFault;
  /** Test-only: delays the first veth deletion of a release (test_slow_delete.ts). */
  vethDeleteDelay?: VethDeleteDelay;
}

/** Pod identity from CNI_ARGS (`K8S_POD_NAMESPACE=…;K8S_POD_NAME=…`). */
export function parseCniArgs(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (args ?? "").split(";")) {
    const eq = pair.indexOf("=");
    if (eq > 0) out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

const ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations";

function runtimeAnnotations(config: Record<string, unknown>): Record<string, string> | undefined {
  const rc = config.runtimeConfig;
  if (!rc || typeof rc !== "object") return undefined;
  for (const [k, v] of Object.entries(rc as Record<string, unknown>)) {
    if (k.toLowerCase() !== ANNOTATIONS_CAPABILITY) continue;
    if (v === null) return {};
    if (typeof v !== "object" || Array.isArray(v)) {
      throw new CniError(
        CniCode.invalidConfig,
        `runtimeConfig.${ANNOTATIONS_CAPABILITY} is not an object`,
      );
    }
    const out: Record<string, string> = {};
    for (const [ak, av] of Object.entries(v as Record<string, unknown>)) {
      if (typeof av === "string") out[ak] = av;
    }
    return out;
  }
  return undefined;
}

function parseOptional(text: string | undefined): IP | undefined {
  return text ? parseIP(text) : undefined;
}

/** The handler for ADD, DEL, CHECK and GC. */
export class PodHandler {
  /** DEL's veth deletions still running. */
  readonly #removals = new Set<Promise<void>>();
  /**
   * The same, by the identity of the pod netns they empty (a path can name another netns, and
   * two paths one): an ADD into such a netns waits, its `eth0` may still be the leaving veth's.
   */
  readonly #removalsByNetns = new Map<NetnsIdentity, Promise<void>>();
  /** The same, of records whose veth's other end is in a netns nobody can name: every ADD waits. */
  readonly #removalsAnywhere = new Set<Promise<void>>();
  /** The attachments whose DEL answered and whose veth deletion is still running. */
  readonly #removing = new Set<string>();
  /**
   * Records whose release found the host veth their pod's (or gone: null) when taking it off:
   * the veth {@link Datapath.removeVeth} deletes without looking it up again.
   */
  readonly #detached = new WeakMap<Attachment, Link | null>();
  /** The netns each record may have its veth in: an ADD into none of them skips a link dump. */
  readonly #netnsIdentities = new NetnsIdentities();
  #netnsIdentitiesBuilt = false;
  /** The sweep's look for the records unknown since a restart. */
  readonly #relocator: UnknownNetnsRelocator;

  constructor(private readonly deps: PodHandlerDeps) {
    this.#relocator = new UnknownNetnsRelocator({
      identities: this.#netnsIdentities,
      datapath: deps.datapath,
      recordsOf: (keys) => storedRecordsOf(deps.store, keys),
    });
  }

  /**
   * The agent's sweep: learns where the veths of records unknown since a restart are (see
   * netns_relocate.ts), so new pods' ADDs stop paying a link dump on their account; learns the
   * records' netns first when no request has yet. Synchronous, additive: no container's turn.
   */
  relocateUnknownNetns(): RelocateReport {
    // Learnt just now: the sweep looks on the same link dump (no request ran in between).
    return this.#relocator.sweep(this.#buildNetnsIdentities());
  }

  /**
   * Dispatches one RPC request. With `hold` (the RPC server's), DEL answers before the veth
   * is gone and hands the rest to `hold`; without it, DEL is synchronous.
   */
  async handle(req: RpcRequest, hold?: HoldWork): Promise<RpcResponse> {
    switch (req.command) {
      case "ADD":
        return { ok: true, result: await this.add(req) };
      case "DEL": {
        const { removing } = await this.del(req, hold !== undefined);
        if (removing) hold!(removing);
        return { ok: true };
      }
      case "CHECK":
        this.check(req);
        return { ok: true };
      case "GC":
        await this.gc(req);
        return { ok: true };
      case "STATUS":
        return { ok: true };
    }
  }

  async add(req: RpcRequest): Promise<Record<string, unknown>> {
    const { store } = this.deps;
    // Flock not first in its chain: the earlier plugins' result, checked before any work.
    const chained = readChainedResult(req.config);
    let existing = store.get(req.containerId, req.ifname);
    if (existing?.state === "releasing") {
      // Its DEL answered but the veth's deletion failed: finish it, then start afresh.
      await this.release(existing);
      existing = undefined;
    }
    const network = networkOf(req);
    if (existing && ofNetwork(existing, network)) {
      // Retried with a new sandbox netns: the new path is recorded before setup moves the pod
      // there, so a crash in between leaves a record naming where the pod goes, never the
      // abandoned netns (the start-up repair, DEL's wait for the veth and CHECK look there).
      const moved = existing.netns !== req.netns;
      if (moved) {
        store.setNetns(req.containerId, req.ifname, req.netns);
        this.deps.crashAt?.("add-retry-new-netns");
      }
      // A retry: converge the datapath for the addresses already held.
      let links: PodInterfaces;
      let opened: NetnsIdentity | undefined;
      try {
        links = await this.#setupOnceNetnsEmptied(
          req,
          this.#podNetwork(req, existing),
          existing.hostIface,
          (identity) => opened = identity,
        );
      } catch (e) {
        if (moved) this.#recordNetnsOfUnmovedVeth(existing);
        throw e;
      }
      // Its veth's other end is where setup found or made it: a record unknown since a restart
      // is known again, and ADDs into other netns stop asking the kernel on its account.
      if (opened !== undefined) this.#netnsIdentities.located(attachmentKey(req), opened);
      // A record from before flock kept network names is this network's from now on.
      if (existing.network === undefined && network !== undefined) {
        store.claimNetwork(req.containerId, req.ifname, network);
      }
      if (existing.state === "pending") store.commit(req.containerId, req.ifname);
      this.deps.anycast?.sync(existing.anycast);
      return this.#result(req, existing, links, chained);
    }
    const [other] = store.interfacesOf(req.containerId);
    if (other) {
      // The host interface is named after the container alone (one routed veth per pod): a
      // second interface, on this network or another one, would take over the first one's veth.
      // The same ifname of another network lands here too: it is not a retry of that ADD.
      const on = other.network === undefined ? "" : ` on network ${JSON.stringify(other.network)}`;
      throw new CniError(
        CniCode.invalidConfig,
        `CNI_IFNAME: container ${req.containerId} already has a flock interface ` +
          `(${other.ifname})${on}`,
        "flock attaches one interface per container",
      );
    }
    const podArgs = parseCniArgs(req.args);
    const namespace = podArgs.K8S_POD_NAMESPACE ?? "";
    const name = podArgs.K8S_POD_NAME ?? "";
    let annotations = runtimeAnnotations(req.config);
    if (annotations === undefined && this.deps.lookupAnnotations && namespace && name) {
      annotations = await this.deps.lookupAnnotations(namespace, name, podArgs.K8S_POD_UID);
    }
    const want = parsePodAnnotations(
      annotations ?? {},
      this.deps.node,
      runtimeAddresses(req.config, podArgs),
    );
    const key = `${namespace}/${name}`;
    const taken: { pool: AddressPool; ip: IP }[] = [];
    // Never handed to a pod: give back without cooldown, newest first, so `next` rewinds.
    const releaseTaken = () => {
      for (const t of taken.splice(0).reverse()) t.pool.giveBack(t.ip);
    };
    const takeBoth = () => [
      this.#take(want.ipv6, this.deps.pool6, want.algo, key, taken),
      this.#take(want.ipv4, this.deps.pool4, want.algo, key, taken),
    ];
    let record: Omit<Attachment, "state" | "createdAt">;
    try {
      let ipv6: IP | undefined, ipv4: IP | undefined;
      try {
        [ipv6, ipv4] = takeBoth();
      } catch (e) {
        // A DEL that answered is still releasing its addresses (its veth is not gone yet): an
        // exhausted pool or a pinned address may be free in a moment. Once, then as it is.
        if (this.#removals.size === 0) throw e;
        releaseTaken();
        await Promise.all(this.#removals);
        [ipv6, ipv4] = takeBoth();
      }
      record = {
        containerId: req.containerId,
        ifname: req.ifname,
        netns: req.netns,
        hostIface: this.#freeHostIface(req.containerId),
        podNamespace: namespace || undefined,
        podName: name || undefined,
        network,
        ipv6: ipv6 && formatIP(ipv6),
        ipv4: ipv4 && formatIP(ipv4),
        anycast: want.anycast.map(formatIP),
      };
      store.insertPending(record);
    } catch (e) {
      releaseTaken();
      throw e;
    }
    this.deps.crashAt?.("add-after-pending");
    try {
      const links = await this.#setupOnceNetnsEmptied(
        req,
        this.#podNetwork(req, record),
        record.hostIface,
      );
      this.deps.crashAt?.("add-after-datapath");
      this.deps.addFault?.();
      store.commit(req.containerId, req.ifname);
      this.deps.crashAt?.("add-after-commit");
      if (record.anycast.length) this.deps.anycast?.sync(record.anycast);
      return this.#result(req, record, links, chained);
    } catch (e) {
      if (await this.#removeHalfMadeVeth(record)) {
        try {
          store.delete(req.containerId, req.ifname);
          this.#netnsIdentities.forget(attachmentKey(req));
        } finally {
          releaseTaken();
        }
      }
      // The failed pod may already be a path of a route: recompute without it.
      if (record.anycast.length) this.deps.anycast?.trySync(record.anycast);
      throw e;
    }
  }

  /**
   * After a failed setup of an ADD retried with a new netns: the record names the old netns again
   * when the veth's other end is still there (the setup refused the new one before moving it), so
   * the pod keeps being repaired, checked and released where it lives. Otherwise, or when the
   * kernel cannot tell, the record keeps the new path: the DEL that follows a failed ADD releases
   * the veth wherever its other end is.
   */
  #recordNetnsOfUnmovedVeth(rec: Attachment): void {
    try {
      if (this.deps.datapath.locatePeerNetns(rec.hostIface, rec.netns).identity !== undefined) {
        this.deps.store.setNetns(rec.containerId, rec.ifname, rec.netns);
      }
    } catch (e) {
      this.deps.log({
        level: "error",
        msg: "a failed ADD retry could not tell where its veth is; the record names the new netns",
        containerId: rec.containerId,
        ifname: rec.ifname,
        error: errorMessage(e),
      });
    }
  }

  /**
   * A failed ADD's cleanup, off the event loop as every release: deletes the veth it may have
   * half made. True once it is gone. When the deletion fails the veth may survive with the pod's
   * addresses inside the pod's netns, so they must not go to another pod: the record turns
   * `releasing` with its addresses held, exactly as after a failed background DEL, and the
   * sweep, a DEL, a retried ADD, GC or the next start finishes the release (addresses cooling).
   */
  async #removeHalfMadeVeth(record: Omit<Attachment, "state" | "createdAt">): Promise<boolean> {
    const { containerId, ifname } = record;
    try {
      this.deps.vethDeleteFault?.();
      const foreign = await this.deps.datapath.removeVeth(containerId, {
        ipv6: parseOptional(record.ipv6),
        ipv4: parseOptional(record.ipv4),
        ...this.#ownership(record),
      });
      if (foreign) this.#logForeign(record, foreign);
      return true;
    } catch (error) {
      let held = "releasing";
      try {
        this.deps.store.abandon(containerId, ifname, (this.deps.now ?? Date.now)());
      } catch (storeError) {
        // Still pending: a retried ADD or DEL of the container, or the next start, finishes it.
        held = `pending (${errorMessage(storeError)})`;
      }
      this.deps.log({
        level: "error",
        msg: `a failed ADD could not delete its veth; the attachment stays ${held}`,
        containerId,
        ifname,
        error: errorMessage(error),
      });
      return false;
    }
  }

  /**
   * The datapath's setup of `pod`, once no veth of an answered DEL is leaving its netns any more
   * (with the same ifname, the pod's `eth0` may still be the leaving veth's other end). The
   * netns's identity is the one setup reads where it opens the netns (no second open): a leaving
   * veth there stops setup before anything changes, and setup runs again once it is gone. So an
   * ADD naming the netns by another path than the DEL did waits all the same, and an ADD into a
   * netns no DEL empties pays one map look-up. `opened` is told the identity of the setup that ran.
   */
  async #setupOnceNetnsEmptied(
    req: RpcRequest,
    pod: PodNetwork,
    hostIface: string,
    opened?: (identity: NetnsIdentity) => void,
  ): Promise<PodInterfaces> {
    for (let waits = 0;; waits++) {
      // Bounded: past it (DELs emptying this netns without end), setup goes ahead and the
      // kernel's answer stands.
      const leaving = waits < LEAVING_VETH_WAITS;
      try {
        return this.deps.datapath.setup(
          pod,
          this.#netnsOwnerCheck(req, hostIface, (identity) => {
            const removal = leaving ? this.#removalEmptying(identity) : undefined;
            if (removal) throw new NetnsBeingEmptied(removal);
            opened?.(identity);
          }),
        );
      } catch (e) {
        if (!(e instanceof NetnsBeingEmptied)) throw e;
        await e.removal;
      }
    }
  }

  /** The running DEL veth deletions that may empty the netns `identity`, if any. */
  #removalEmptying(identity: NetnsIdentity): Promise<unknown> | undefined {
    const here = this.#removalsByNetns.get(identity);
    if (this.#removalsAnywhere.size === 0) return here;
    return Promise.all([here, ...this.#removalsAnywhere]);
  }

  /**
   * Refuses a pod netns in which another container already has a flock interface (not counting
   * one whose DEL was answered): each pod's default routes point at its own veth, so a second
   * one would take them over. Such a netns is not a Kubernetes pod (one sandbox, one network
   * attachment per network): two runtimes' containers were given the same CNI_NETNS. `opened`
   * sees the netns's identity first and may throw to stop the setup before anything changes.
   */
  #netnsOwnerCheck(
    req: RpcRequest,
    hostIface: string,
    opened: (identity: NetnsIdentity) => void,
  ): SetupOptions {
    return {
      // Registered before the veth is made (a failure half-way leaves it maybe there), and only
      // forgotten when the record leaves the store; two ADDs into one netns cannot interleave
      // here (setup is synchronous), and the first one's pending record is already stored.
      netnsOpened: (identity) => {
        opened(identity);
        this.#buildNetnsIdentities();
        const key = attachmentKey(req);
        const mayHold = this.#netnsIdentities.mayHoldOther(
          identity,
          key,
          (other) => storedRecordOf(this.deps.store, other) !== undefined,
        );
        this.#netnsIdentities.add(key, identity);
        return mayHold;
      },
      // A stale veth of this name that is another record's pod's is not remade (taken from it).
      ...setupOwnershipChecks(this.deps.store, req, hostIface, (holder) =>
        new CniError(
          CniCode.invalidConfig,
          `CNI_NETNS ${req.netns}: the network namespace already has container ` +
            `${holder.containerId}'s flock interface ${holder.ifname}`,
          "flock gives a network namespace one interface: a second one would take over the " +
            "first one's default routes",
        )),
    };
  }

  /**
   * The netns identities of the records the store held before this handler's first ADD (the
   * start-up reconcile's survivors), from the kernel: where each record's veth's other end is.
   * Returns the node's links when it dumped them just now (it builds once), for a caller that
   * looks at them in the same synchronous run.
   */
  #buildNetnsIdentities(): ReadonlyMap<string, Link> | undefined {
    if (this.#netnsIdentitiesBuilt) return undefined;
    const records = this.deps.store.list();
    // One dump of the node's links for every record, not a lookup each; should the dump fail,
    // each record asks for its own veth (a failure there makes only that record unknown).
    const nodeLinks = records.length > 0
      ? this.deps.datapath.nodeLinksOrNone("learning the netns of the stored records")
      : undefined;
    for (const rec of records) {
      const key = attachmentKey(rec);
      let where: ReturnType<Datapath["locatePeerNetns"]>;
      try {
        where = this.deps.datapath.locatePeerNetns(rec.hostIface, rec.netns, nodeLinks);
      } catch {
        where = { unknown: true };
      }
      if (where.identity) this.#netnsIdentities.add(key, where.identity);
      if (where.unknown) this.#netnsIdentities.addUnknown(key);
    }
    // Only once complete: a store that failed to list fails this ADD, the next one builds again.
    this.#netnsIdentitiesBuilt = true;
    return nodeLinks;
  }

  /**
   * What the datapath needs to tell this record's host veth from another pod's (see
   * Datapath's `others`): the record's name and netns, and the other records.
   */
  #ownership(rec: Pick<Attachment, "containerId" | "ifname" | "netns" | "hostIface">) {
    return {
      hostIface: rec.hostIface,
      netns: rec.netns,
      others: otherPodSides(this.deps.store, rec, rec.hostIface),
    };
  }

  /** A release left a veth in place: another pod's, which the record wrongly names. */
  #logForeign(rec: Pick<Attachment, "containerId" | "ifname">, foreign: ForeignVeth): void {
    this.deps.log({
      level: "error",
      msg: `host veth ${foreign.hostIface} is not this attachment's: its other end is in ` +
        `${foreign.owner}'s netns; left in place` +
        (foreign.addressesInUse.length
          ? `, and ${foreign.addressesInUse.map(formatIP).join(", ")} (routed through it) ` +
            "not released"
          : ""),
      containerId: rec.containerId,
      ifname: rec.ifname,
      hostIface: foreign.hostIface,
      owner: foreign.owner,
    });
  }

  /**
   * The host veth's name for a new attachment: BRIEF §2's hash of the container ID, or, when
   * another attachment holds that (two IDs with the same 32-bit hash), the first alternative no
   * attachment holds. A retry finds its record, so it never picks again.
   */
  #freeHostIface(containerId: string): string {
    for (let attempt = 0; attempt < HOST_IFACE_ATTEMPTS; attempt++) {
      const name = hostIfaceCandidate(containerId, attempt);
      if (!this.deps.store.hostIfaceHolder(name)) return name;
    }
    throw new CniError(
      CniCode.internal,
      `no free host interface name for container ${containerId} ` +
        `(${HOST_IFACE_ATTEMPTS} candidates all in use)`,
    );
  }

  #take(
    want: FamilyRequest | undefined,
    pool: AddressPool | undefined,
    algo: Parameters<AddressPool["allocate"]>[0]["algo"],
    key: string,
    taken: { pool: AddressPool; ip: IP }[],
  ): IP | undefined {
    if (!want || !pool) return undefined;
    let ip: IP;
    if (want.mode === "pinned" && want.pinned) {
      try {
        pool.reserve(want.pinned);
      } catch (e) {
        // Name the annotation or runtime field that asked for it, as for every other bad one.
        if (!(e instanceof AddressInUseError)) throw e;
        throw pinnedAddressError(want, e.message + withheldReason(this.deps.store, want.pinned));
      }
      ip = want.pinned;
    } else {
      ip = pool.allocate({ algo, range: want.range, key });
    }
    taken.push({ pool, ip });
    return ip;
  }

  #podNetwork(
    req: RpcRequest,
    rec: Pick<Attachment, "ipv6" | "ipv4" | "anycast" | "hostIface">,
  ): PodNetwork {
    return {
      containerId: req.containerId,
      hostIface: rec.hostIface,
      netns: req.netns,
      ifname: req.ifname,
      ipv6: parseOptional(rec.ipv6),
      ipv4: parseOptional(rec.ipv4),
      anycast: rec.anycast.map((a) => parseIP(a)),
      mtu: this.deps.node.mtu,
    };
  }

  #result(
    req: RpcRequest,
    rec: Pick<Attachment, "ipv6" | "ipv4">,
    links: { hostIface: string; hostMac: string; podMac: string },
    chained: Record<string, unknown> | undefined,
  ): Record<string, unknown> {
    return chainResult(
      chained,
      buildAddResult({
        cniVersion: String(req.config.cniVersion),
        hostIface: links.hostIface,
        hostMac: links.hostMac,
        ifname: req.ifname,
        podMac: links.podMac,
        netns: req.netns,
        mtu: this.deps.node.mtu,
        ipv6: rec.ipv6,
        ipv4: rec.ipv4,
      }),
    );
  }

  /**
   * Tears down one attachment; everything already gone is success. With `background`, a
   * committed attachment goes off the network now and `removing` is its veth's deletion, still
   * running (see {@link releaseInBackground}); otherwise the release is over when this resolves.
   */
  async del(req: RpcRequest, background = false): Promise<{ removing?: Promise<void> }> {
    const rec = this.deps.store.get(req.containerId, req.ifname);
    // Another network's attachment under the same key (its ADD for this network was refused):
    // nothing of this network's to undo, and that pod's veth must stay.
    if (rec && !ofNetwork(rec, networkOf(req))) return {};
    if (rec?.state === "committed" && background) {
      return { removing: this.releaseInBackground(rec) };
    }
    if (rec) {
      await this.release(rec);
      return {};
    }
    // No record: tear down a half-made veth by its container-derived name, unless that veth
    // belongs to another interface of this container (a refused second ADD is followed by a DEL)
    // or to another container whose ID hashes to the same name.
    if (
      this.deps.store.interfacesOf(req.containerId).length === 0 &&
      !this.deps.store.hostIfaceHolder(hostIfaceName(req.containerId))
    ) {
      const name = hostIfaceName(req.containerId);
      const foreign = await this.deps.datapath.removeVeth(req.containerId, {
        netns: req.netns,
        others: otherPodSides(this.deps.store, req, name),
      });
      if (foreign) this.#logForeign(req, foreign);
    }
    return {};
  }

  /**
   * Releases one attachment whole, with the veth's deletion off the event loop: resolves once
   * the veth and the record are gone and the addresses cooling. A committed attachment first
   * goes off the network and turns `releasing` ({@link #takeOffNetwork}), so when the deletion
   * fails (this rejects) it stays `releasing` for the next try, as after a failed background DEL.
   * Used by a DEL without `hold`, a DEL or ADD of a container whose release is stuck, and the
   * agent's stuck-release sweep; GC uses the same two steps for many attachments at once.
   */
  async release(rec: Attachment): Promise<void> {
    this.#takeOffNetwork(rec);
    await this.#removeVethThenFinish(rec);
  }

  /**
   * DEL's release of a committed attachment, in two halves. Now: the pod goes off the network
   * ({@link #takeOffNetwork}). Returned, still running: the veth's deletion off the event loop,
   * then the record's removal and the addresses' release. The promise never rejects: a failure
   * is logged and the record stays `releasing` for the agent's sweep, a DEL retry, an ADD of the
   * same container, GC or the next start to finish (each through {@link release}).
   */
  releaseInBackground(rec: Attachment): Promise<void> {
    const key = attachmentKey(rec);
    // Where its veth's other end is, before the release forgets it.
    const netns = this.#netnsOfRecord(key);
    this.#takeOffNetwork(rec);
    const removal = this.#removeVethThenFinish(rec).catch((e) => {
      this.deps.log({
        level: "error",
        msg: "veth deletion after DEL failed; the attachment stays releasing",
        containerId: rec.containerId,
        ifname: rec.ifname,
        error: String(e),
      });
    });
    this.#removing.add(key);
    this.#removals.add(removal);
    removal.then(() => {
      this.#removing.delete(key);
      this.#removals.delete(removal);
    });
    if (netns.unknown) {
      this.#removalsAnywhere.add(removal);
      removal.then(() => this.#removalsAnywhere.delete(removal));
    }
    for (const identity of netns.identities) {
      const earlier = this.#removalsByNetns.get(identity);
      const all = earlier ? Promise.all([earlier, removal]).then(() => {}) : removal;
      this.#removalsByNetns.set(identity, all);
      all.then(() => {
        if (this.#removalsByNetns.get(identity) === all) this.#removalsByNetns.delete(identity);
      });
    }
    return removal;
  }

  /**
   * The netns where the record `key`'s veth may have its other end, by identity, and whether it
   * may be one nobody can name (then, or when even that cannot be told, every ADD must wait).
   */
  #netnsOfRecord(key: string): { identities: NetnsIdentity[]; unknown: boolean } {
    try {
      // The restarted agent's first request may be this DEL.
      this.#buildNetnsIdentities();
    } catch {
      return { identities: [], unknown: true };
    }
    return {
      identities: this.#netnsIdentities.identitiesOf(key),
      unknown: this.#netnsIdentities.isUnknown(key),
    };
  }

  /**
   * Whether the attachment's veth deletion after its DEL is still running: its release is not
   * stuck (maybe slow), and no one else may start another one meanwhile.
   */
  isRemoving(rec: Pick<Attachment, "containerId" | "ifname">): boolean {
    return this.#removing.has(attachmentKey(rec));
  }

  /**
   * The first half of every release, without waiting for the kernel: a committed record turns
   * `releasing` (durable: a crash from here on is finished by the start-up reconcile), the pod's
   * anycast paths go while its veth still exists (see AnycastRoutes.sync), and the node's routes
   * to it go and its host veth goes down. Repeating it for a `releasing` record is harmless.
   */
  #takeOffNetwork(rec: Attachment, nodeLinks?: ReadonlyMap<string, Link>): void {
    const turned = rec.state === "committed" &&
      this.deps.store.markReleasing(rec.containerId, rec.ifname, (this.deps.now ?? Date.now)());
    if (rec.anycast.length) this.deps.anycast?.sync(rec.anycast, { without: rec });
    // Another pod's veth (a record naming it wrongly) is left alone; removeVeth says so.
    const { foreign, veth } = this.deps.datapath.detach(rec.containerId, {
      ipv6: parseOptional(rec.ipv6),
      ipv4: parseOptional(rec.ipv4),
      ...this.#ownership(rec),
    }, nodeLinks);
    // The container is held until its release ends, so the second half need not ask again.
    if (!foreign && veth !== undefined) this.#detached.set(rec, veth);
    if (turned) this.deps.crashAt?.("del-after-releasing");
  }

  /**
   * The second half of every release: deletes the veth off the event loop, then removes the
   * record and releases the addresses. Rejects when the deletion fails (the record stays
   * `releasing`); the test fault applies here, to every release path alike.
   */
  async #removeVethThenFinish(rec: Attachment): Promise<void> {
    const ipv6 = parseOptional(rec.ipv6);
    const ipv4 = parseOptional(rec.ipv4);
    this.deps.vethDeleteFault?.();
    await this.deps.vethDeleteDelay?.();
    const detached = this.#detached.get(rec);
    const foreign = await this.deps.datapath.removeVeth(
      rec.containerId,
      { ipv6, ipv4, ...(detached === undefined ? this.#ownership(rec) : {}) },
      detached,
    );
    this.deps.crashAt?.("del-after-teardown");
    if (!foreign) {
      this.#finishRelease(rec, ipv6, ipv4);
      // Its veth is gone, and with it the routes of any address withheld through it.
      return this.#tryFreeUnroutedWithheld(rec.hostIface);
    }
    this.#logForeign(rec, foreign);
    // An address the other pod's veth is routed for is in use there: it stays out of IPAM, and
    // the store says so, so that a restart does not hand it out either.
    const inUse = (ip?: IP) =>
      ip && foreign.addressesInUse.some((u) => formatIP(u) === formatIP(ip));
    this.#finishRelease(
      rec,
      inUse(ipv6) ? undefined : ipv6,
      inUse(ipv4) ? undefined : ipv4,
      withheldThrough(foreign),
    );
  }

  /** The record goes and the addresses return to IPAM (cooling), in one store transaction. */
  #finishRelease(
    rec: Pick<Attachment, "containerId" | "ifname">,
    ipv6?: IP,
    ipv4?: IP,
    withheld: Omit<WithheldAddress, "at">[] = [],
  ): void {
    const released = [ipv6, ipv4].filter((ip) => ip !== undefined);
    this.deps.store.finishRelease(
      rec.containerId,
      rec.ifname,
      released.map(formatIP),
      (this.deps.now ?? Date.now)(),
      withheld,
    );
    this.#netnsIdentities.forget(attachmentKey(rec));
    if (ipv6) this.deps.pool6?.release(ipv6);
    if (ipv4) this.deps.pool4?.release(ipv4);
  }

  /** {@link freeUnroutedWithheld} after a release that is over: a failure is only logged. */
  #tryFreeUnroutedWithheld(hostIface: string): void {
    try {
      this.freeUnroutedWithheld(hostIface);
    } catch (e) {
      // The agent's sweep and the next start look again.
      this.deps.log({ level: "error", msg: "freeing withheld addresses failed", error: String(e) });
    }
  }

  /**
   * Gives back the withheld addresses (all, or those withheld through the veth `hostIface`) that
   * the node no longer routes through their veth, cooling from now (see withheld.ts).
   */
  freeUnroutedWithheld(hostIface?: string): void {
    const freed = freeUnroutedWithheld({
      store: this.deps.store,
      node: this.deps.datapath.node,
      pool6: this.deps.pool6,
      pool4: this.deps.pool4,
      now: (this.deps.now ?? Date.now)(),
      unsettled: this.deps.withheldUnsettled,
    }, hostIface);
    for (const w of freed) {
      this.deps.log({
        level: "info",
        msg: `withheld address ${w.ip} is no longer routed through ${w.hostIface}: released`,
        owner: w.owner,
      });
    }
  }

  check(req: RpcRequest): void {
    const rec = this.deps.store.get(req.containerId, req.ifname);
    const network = networkOf(req);
    if (!rec || rec.state !== "committed" || !ofNetwork(rec, network)) {
      const on = network === undefined ? "" : ` on network ${JSON.stringify(network)}`;
      throw new CniError(
        CniCode.unknownContainer,
        `no flock attachment for container ${req.containerId} interface ${req.ifname}${on}`,
      );
    }
    const prev = parsePrevResult(req.config);
    const key = attachmentKey(rec);
    try {
      // After a restart, CHECK may come before any ADD has learnt which records are unknown.
      this.#buildNetnsIdentities();
    } catch {
      // Then the first ADD builds them; this CHECK's answer does not depend on them.
    }
    const problems = this.deps.datapath.check(
      this.#podNetwork(req, rec),
      expectedMacs(prev, req.ifname, rec.hostIface ?? hostIfaceName(req.containerId)),
      // A record unknown since a restart whose veth is found here is known again.
      this.#netnsIdentities.isUnknown(key)
        ? (identity) => this.#netnsIdentities.located(key, identity)
        : undefined,
    );
    problems.push(...this.deps.anycast?.check(rec) ?? []);
    const have = new Set([rec.ipv6, rec.ipv4].filter(Boolean));
    // The pod interface must be in the netns CHECK names (compared by namespace, not by path
    // spelling: see sandbox_check.ts).
    for (const iface of prev?.interfaces ?? []) {
      if (iface.name !== req.ifname || iface.sandbox === undefined) continue;
      const moved = sandboxMismatch(req.ifname, iface.sandbox, req.netns);
      if (moved) problems.push(moved);
    }
    for (const ip of prev?.ips ?? []) {
      // The cached result is the whole chain's: an address an earlier or a later plugin put on
      // another interface is not flock's to check (the spec: allow for later plugins' changes).
      // flock's own addresses always name its pod interface; one naming no interface (an
      // IPAM-style entry of another plugin) is not flock's either.
      const iface = ip.interface === undefined ? undefined : prev?.interfaces[ip.interface];
      if (!iface || iface.name !== req.ifname || !iface.sandbox) continue;
      const addr = ip.address.split("/")[0];
      const canonical = addr ? formatIP(parseIP(addr)) : "";
      if (!have.has(canonical)) {
        problems.push(`prevResult address ${addr} is not held by this attachment`);
      }
    }
    if (problems.length) {
      throw new CniError(
        CODE_CHECK_FAILED,
        "the pod network differs from what flock set up",
        problems.join("; "),
      );
    }
  }

  /**
   * The attachments a GC of `network` releases: its own ones that `valid` does not list. The list
   * names only the attachments of the network GC was called for, so another network's are never
   * stale here. A record from before flock kept network names (schema 4) may be any network's:
   * listed, it is this network's from now on; not listed, it is released only when no live pod
   * can depend on it (it is pending or releasing, or its netns is gone). A live one waits for its
   * DEL, or for a GC of the network that lists it, so an upgraded node with two flock networks
   * never loses a running pod to the other network's GC.
   */
  #staleOf(network: string | undefined, valid: Set<string>): Attachment[] {
    const stale: Attachment[] = [];
    for (const rec of this.deps.store.list()) {
      const listed = valid.has(attachmentKey(rec));
      if (rec.network === undefined && network !== undefined) {
        if (listed) this.deps.store.claimNetwork(rec.containerId, rec.ifname, network);
        else if (rec.state !== "committed" || isNetnsGone(rec.netns)) stale.push(rec);
      } else if (!listed && ofNetwork(rec, network)) {
        stale.push(rec);
      }
    }
    return stale;
  }

  /**
   * Releases every attachment the runtime no longer lists as valid, and answers once all of them
   * are released (records gone, addresses cooling); one whose DEL's veth deletion still runs is
   * left to it (GC does not wait for that deletion, see rpc_server.ts). All go off the network
   * first, then their veths are deleted off the event loop, {@link VETH_DELETIONS_IN_FLIGHT} at a
   * time. Every one is tried whatever happens to the others (the spec: continue past errors and
   * report them); the failed ones stay `releasing` for the agent's sweep or the next GC.
   *
   * @throws {CniError} code 11 (try again later) naming every attachment that failed: the failure
   *   is one a retry can clear, and the sweep retries it anyway.
   */
  async gc(req: RpcRequest): Promise<void> {
    const valid = validAttachments(req.config);
    const stale = this.#staleOf(networkOf(req), valid).filter((rec) => !this.isRemoving(rec));
    const failures: { rec: Attachment; error: unknown }[] = [];
    // One dump of the node's links for the whole batch, not a look-up per attachment. Nothing
    // else runs between it and the loop below (GC holds every container): only a pod's netns
    // going can change it, and detach takes a veth that vanished for gone.
    const nodeLinks = stale.length > 1 ? this.deps.datapath.nodeLinksOrNone("GC") : undefined;
    const offNetwork = stale.filter((rec) => {
      try {
        this.#takeOffNetwork(rec, nodeLinks);
        return true;
      } catch (error) {
        failures.push({ rec, error });
        return false;
      }
    });
    const outcomes = await forEachBounded(offNetwork, VETH_DELETIONS_IN_FLIGHT, async (rec) => {
      await this.#removeVethThenFinish(rec);
      this.deps.log({
        level: "info",
        msg: "gc released attachment",
        containerId: rec.containerId,
        ifname: rec.ifname,
      });
    });
    outcomes.forEach((o, i) => {
      if (o.status === "rejected") failures.push({ rec: offNetwork[i], error: o.reason });
    });
    if (failures.length === 0) return;
    for (const { rec, error } of failures) {
      this.deps.log({
        level: "error",
        msg: "gc could not release attachment; it stays releasing",
        containerId: rec.containerId,
        ifname: rec.ifname,
        error: String(error),
      });
    }
    const described = failures.map(({ rec, error }) =>
      `${rec.containerId}/${rec.ifname}: ${errorMessage(error)}`
    );
    throw new CniError(
      CniCode.tryAgainLater,
      `GC released ${stale.length - failures.length} of ${stale.length} attachments; ` +
        described[0],
      described.join("; "),
    );
  }
}

/**
 * The attachment a request is about belongs to the request's network: the same, or either side
 * names none (a record from before flock kept network names; a request only when the handler is
 * driven directly, since the agent refuses a config without a name).
 */
function ofNetwork(rec: Pick<Attachment, "network">, network: string | undefined): boolean {
  return rec.network === undefined || network === undefined || rec.network === network;
}

/** The request's CNI network: the config's `name` (the agent refuses a config without one). */
function networkOf(req: RpcRequest): string | undefined {
  const name = req.config.name;
  return typeof name === "string" && name !== "" ? name : undefined;
}

/**
 * How many times one ADD waits for veths leaving its netns: each wait is a DEL into that netns
 * answered meanwhile, which a runtime does not repeat without end.
 */
const LEAVING_VETH_WAITS = 8;

/** Thrown by setup's first look at a netns a DEL's veth deletion still empties: wait, retry. */
class NetnsBeingEmptied extends Error {
  constructor(readonly removal: Promise<unknown>) {
    super("a veth is still leaving the pod's netns");
  }
}

/** Host interface names tried for one new attachment (each further one is a 2^-32 chance). */
const HOST_IFACE_ATTEMPTS = 8;

/**
 * The attachments GC must keep: `cni.dev/valid-attachments` (or the spec's older key). Absent or
 * null is an empty list (libcni's GC without arguments, a runtime with no pods).
 *
 * @throws {CniError} code 7 for a list that is not one of `{containerID, ifname}` strings: read
 *   as "nothing is valid", it would release every pod of the node.
 */
function validAttachments(config: Record<string, unknown>): Set<string> {
  const key = config["cni.dev/valid-attachments"] != null
    ? "cni.dev/valid-attachments"
    : "cni.dev/attachments";
  const listed = config[key] ?? [];
  const malformed = (why: string) =>
    new CniError(CniCode.invalidConfig, `${key} is malformed: ${why}`, JSON.stringify(listed));
  if (!Array.isArray(listed)) throw malformed("expected a list");
  const valid = new Set<string>();
  for (const a of listed) {
    const att = a as { containerID?: unknown; ifname?: unknown };
    if (typeof att?.containerID !== "string" || typeof att?.ifname !== "string") {
      throw malformed("each entry needs the strings containerID and ifname");
    }
    valid.add(attachmentKey({ containerId: att.containerID, ifname: att.ifname }));
  }
  return valid;
}

/**
 * The MACs prevResult gives flock's two interfaces, for CHECK to compare with the kernel's: the
 * pod interface (`ifname`, in a sandbox) and the host veth (`hostIface`, none). The last entry
 * of a name counts, as flock's come after an earlier chained plugin's; an entry without a MAC
 * (optional in the spec) is not compared.
 */
function expectedMacs(
  prev: PrevResult | undefined,
  ifname: string,
  hostIface: string,
): CheckExpectations {
  const interfaces = prev?.interfaces ?? [];
  const pod = interfaces.findLast((i) => i.name === ifname && i.sandbox !== undefined);
  const host = interfaces.findLast((i) => i.name === hostIface && i.sandbox === undefined);
  return { podMac: pod?.mac || undefined, hostMac: host?.mac || undefined };
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
