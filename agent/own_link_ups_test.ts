import assert from "node:assert/strict";
import { OwnLinkUps } from "./own_link_ups.ts";

Deno.test("OwnLinkUps: one token per own up, consumed one per up notification", () => {
  const ups = new OwnLinkUps();
  ups.add(7);
  assert.equal(ups.consume(7, 1), 0, "the own up's notification");
  assert.equal(ups.consume(7, 1), 1, "a later up is someone else's");
  ups.add(7);
  assert.equal(ups.consume(7, 2), 1, "own up and a flap in one read: one is someone else's");
  assert.equal(ups.size, 0);
  ups.add(8);
  ups.add(8);
  assert.equal(ups.consume(8, 1), 0);
  assert.equal(ups.consume(8, 1), 0);
  assert.equal(ups.consume(9, 1), 1, "no token: someone else's");
});

Deno.test("OwnLinkUps: bounded (the oldest link's tokens dropped); clear drops all", () => {
  const ups = new OwnLinkUps(2);
  ups.add(1);
  ups.add(2);
  ups.add(1); // 1 is now the newest
  ups.add(3);
  assert.equal(ups.size, 2);
  assert.equal(ups.consume(2, 1), 1, "the oldest dropped: its up is checked (never hidden)");
  assert.equal(ups.consume(1, 2), 0);
  ups.clear();
  assert.equal(ups.consume(3, 1), 1);
});

Deno.test("OwnLinkUps: a token no notification consumed expires after two complete reads", () => {
  const ups = new OwnLinkUps();
  ups.add(7); // an up that changed nothing: something else had set the link up first
  ups.polled();
  assert.equal(ups.size, 1, "kept through the first read");
  ups.polled();
  assert.equal(ups.size, 0, "dropped after the second");
  assert.equal(ups.consume(7, 1), 1, "a later foreign flap is seen");
  ups.add(8);
  ups.polled();
  ups.add(8); // a newer own up of the same link restarts its age
  ups.polled();
  assert.equal(ups.consume(8, 2), 0, "both own ups, read in time");
});
