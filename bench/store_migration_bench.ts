/**
 * Cost of a store upgrade at agent start: `Store.open` of a schema-2 database (as a node that ran
 * a flock from before schema 3 left it) against `Store.open` of a database already at the current
 * schema, at 1,000 and 10,000 records; and the one query every start now adds, the search for
 * records sharing a host veth name (agent/shared_host_iface.ts), on a store without any.
 *
 * Needs no root. Prints one table; the upgrade is a one-off at the first start of a new binary.
 *
 * Run: `deno run -A --no-lock bench/store_migration_bench.ts [--samples N]`
 *
 * @module
 */

import { join } from "node:path";
import { formatTable, medianP99, ratio, type ResultRow, summarize } from "./report.ts";
import { SCHEMA_VERSION, Store } from "../agent/store.ts";
import { manyOldRecords, writeSchema2Store } from "../tests/helpers/old_store.ts";
import { integerArgs } from "./args.ts";

const { samples } = integerArgs({ samples: { default: 15, min: 1 } });

/** Milliseconds of `Store.open` + `close` of a fresh copy of `template` (the copy not timed). */
async function timeOpen(template: string, work: string): Promise<number> {
  await Deno.remove(work, { recursive: true }).catch(() => {});
  await Deno.mkdir(work, { mode: 0o700 });
  for (const entry of Deno.readDirSync(template)) {
    await Deno.copyFile(join(template, entry.name), join(work, entry.name));
  }
  const started = performance.now();
  const store = Store.open(work);
  const elapsed = performance.now() - started;
  if (store.pragmas().userVersion !== SCHEMA_VERSION) throw new Error("not upgraded");
  store.close();
  return elapsed;
}

const root = await Deno.makeTempDir({ prefix: "flock-migrate-bench-" });
const rows: ResultRow[] = [];
try {
  for (const n of [1_000, 10_000]) {
    const old = join(root, `old-${n}`);
    writeSchema2Store(old, manyOldRecords(n));
    const current = join(root, `current-${n}`);
    writeSchema2Store(current, manyOldRecords(n));
    Store.open(current).close();
    const work = join(root, "work");
    const upgrade: number[] = [];
    const plain: number[] = [];
    for (let i = 0; i < samples; i++) {
      upgrade.push(await timeOpen(old, work));
      plain.push(await timeOpen(current, work));
    }
    const [u, p] = [summarize(upgrade), summarize(plain)];
    rows.push(
      { what: `open + upgrade schema 2 → ${SCHEMA_VERSION}, ${n} records`, figure: medianP99(u) },
      { what: `open at schema ${SCHEMA_VERSION} (no upgrade), ${n} records`, figure: medianP99(p) },
      {
        what: `  upgrade / plain open, ${n} records (medians)`,
        figure: ratio(u.median / p.median),
      },
    );
    const store = Store.open(current);
    try {
      const calls: number[] = [];
      for (let i = 0; i < samples * 10; i++) {
        const started = performance.now();
        if (store.sharedHostIfaces().length !== 0) throw new Error("unexpected shared names");
        calls.push(performance.now() - started);
      }
      rows.push({
        what: `shared host name search per start, ${n} records`,
        figure: medianP99(summarize(calls)),
      });
    } finally {
      store.close();
    }
  }
} finally {
  await Deno.remove(root, { recursive: true });
}
console.log(formatTable("store upgrade at start", rows));
