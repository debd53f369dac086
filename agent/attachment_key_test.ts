/** Reading records back by key: one read per key, or one listing for many, the same answer. */

import assert from "node:assert/strict";
import { Store } from "./store.ts";
import {
  attachmentKey,
  LIST_FROM_KEYS,
  storedRecordOf,
  storedRecordsOf,
} from "./attachment_key.ts";

Deno.test("storedRecordsOf: few keys or many, the records in the store by key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flk-keys-" });
  const store = Store.open(dir);
  try {
    const total = LIST_FROM_KEYS * 2;
    for (let i = 0; i < total; i++) {
      store.insertPending({
        containerId: `c${i}`,
        ifname: "eth0",
        netns: `/run/netns/p${i}`,
        hostIface: `flk${i}`,
        ipv6: `fd00:77::${i + 1}`,
        anycast: [],
      });
    }
    const keys = (n: number) => Array.from({ length: n }, (_, i) => `c${i}\u0000eth0`);
    const missing = attachmentKey({ containerId: "gone", ifname: "eth0" });
    // A few keys (one read each) and most of the store (one listing): the same records.
    for (const wanted of [[...keys(3), missing], [...keys(total), missing]]) {
      const got = storedRecordsOf(store, wanted);
      assert.equal(got.size, wanted.length - 1);
      assert.equal(got.has(missing), false);
      for (const key of wanted.slice(0, -1)) {
        assert.deepEqual(got.get(key), storedRecordOf(store, key));
      }
    }
    assert.equal(storedRecordsOf(store, []).size, 0);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
