import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { Store } from "./store.ts";
import { otherNetnsHolder, otherPodSides } from "./veth_owner.ts";

/**
 * A store in which `old` and `young` (committed, in that order) share the host name `SHARED`, as
 * only a store from before schema 3 or one edited by hand holds, and `third` has its own.
 */
async function withSharedName(fn: (store: Store) => void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-veth-owner-" });
  try {
    const store = Store.open(join(dir, "state"));
    try {
      let n = 0;
      for (const id of ["old", "young", "third"]) {
        n++;
        store.insertPending({
          containerId: id,
          ifname: "eth0",
          netns: `/run/netns/${id}`,
          hostIface: `flock0000000${n}`,
          ipv6: `fd00::${n}`,
          anycast: [],
        });
        store.commit(id, "eth0");
      }
      const raw = new DatabaseSync(store.path);
      try {
        raw.exec(`UPDATE attachment SET host_iface = '${SHARED}' WHERE container_id = 'young'`);
        raw.exec(`UPDATE attachment SET host_iface = '${SHARED}' WHERE container_id = 'old'`);
      } finally {
        raw.close();
      }
      fn(store);
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const SHARED = "flock0000aaaa";

Deno.test("hostIfaceHolders: every holder of a shared name, oldest first; hostIfaceHolder the oldest", () =>
  withSharedName((store) => {
    assert.deepEqual(store.hostIfaceHolders(SHARED), [
      { containerId: "old", ifname: "eth0", netns: "/run/netns/old", state: "committed" },
      { containerId: "young", ifname: "eth0", netns: "/run/netns/young", state: "committed" },
    ]);
    assert.deepEqual(store.hostIfaceHolder(SHARED), { containerId: "old", ifname: "eth0" });
    assert.deepEqual(store.hostIfaceHolders("flock0000ffff"), []);
  }));

Deno.test("otherNetnsHolder: a shared name cannot hide another container behind this one's record", () =>
  withSharedName((store) => {
    // "old" is the first holder: the lookup must not stop at this container's own record.
    assert.equal(otherNetnsHolder(store, "old", [SHARED])?.containerId, "young");
    assert.equal(otherNetnsHolder(store, "young", [SHARED])?.containerId, "old");
    store.markReleasing("young", "eth0", Date.now());
    assert.equal(otherNetnsHolder(store, "old", [SHARED]), undefined, "a releasing one is leaving");
  }));

Deno.test("otherPodSides: the other holders of the name first, then every other record, never self", () =>
  withSharedName((store) => {
    const sides = [...otherPodSides(store, { containerId: "old", ifname: "eth0" }, SHARED)()];
    assert.deepEqual(sides, [
      { label: "young/eth0", netns: "/run/netns/young" },
      { label: "third/eth0", netns: "/run/netns/third" },
    ]);
  }));
