/**
 * Datapath.nodeLinksOrNone: one link dump for work over many records, or, when the dump fails,
 * undefined (each record then looks its own veth up) and one log line saying why. A closed
 * handle fails every request without sending one, so no root and no namespace are needed.
 */

import assert from "node:assert/strict";
import { Datapath } from "./datapath.ts";
import { Handle } from "../netlink/mod.ts";

Deno.test("nodeLinksOrNone: a failed dump falls back to none, logged once with the reason", () => {
  const handle = Handle.current();
  handle.close();
  const logged: Record<string, unknown>[] = [];
  const datapath = new Datapath(handle, { log: (fields) => logged.push(fields) });
  assert.equal(datapath.nodeLinksOrNone("GC"), undefined);
  assert.equal(logged.length, 1);
  assert.equal(logged[0].level, "warn");
  assert.match(String(logged[0].msg), /dumping the node's links failed: GC looks each veth up/);
  assert.match(String(logged[0].error), /closed/);
});

Deno.test("nodeLinksOrNone: without a log, a failed dump is still only a fallback", () => {
  const handle = Handle.current();
  handle.close();
  assert.equal(new Datapath(handle).nodeLinksOrNone("GC"), undefined);
});
