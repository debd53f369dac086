/**
 * A record's key in memory (`containerId` NUL `ifname`, as the store's primary key), and reading
 * the records of such keys back from the store: one read per key, or one listing for many.
 *
 * @module
 */

import type { Attachment, Store } from "./store.ts";

/** Keys at least this many, and a quarter of the store or more, are read by one listing. */
export const LIST_FROM_KEYS = 16;

/** The key of an attachment (NUL cannot occur in a container id or an interface name). */
export function attachmentKey(a: Pick<Attachment, "containerId" | "ifname">): string {
  return `${a.containerId}\u0000${a.ifname}`;
}

/** The stored record of the {@link attachmentKey} `key`, if it is in the store. */
export function storedRecordOf(store: Store, key: string): Attachment | undefined {
  const [containerId, ifname] = key.split("\u0000");
  return store.get(containerId, ifname);
}

/**
 * The stored records of those {@link attachmentKey} `keys` in the store, by key. A read per key
 * costs ~20 µs (node:sqlite), a listed row ~5 µs: keys that are a good part of the store (a
 * sweep after a restart looks for every record) are read by listing the store once.
 */
export function storedRecordsOf(store: Store, keys: readonly string[]): Map<string, Attachment> {
  const records = new Map<string, Attachment>();
  if (keys.length >= LIST_FROM_KEYS && keys.length * 4 >= store.count()) {
    const wanted = new Set(keys);
    for (const rec of store.list()) {
      const key = attachmentKey(rec);
      if (wanted.has(key)) records.set(key, rec);
    }
    return records;
  }
  for (const key of keys) {
    const rec = storedRecordOf(store, key);
    if (rec) records.set(key, rec);
  }
  return records;
}
