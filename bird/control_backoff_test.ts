/**
 * BirdControl while BIRD stays down: every retry runs a `birdc` and a `bird -p`, so the retries
 * back off (the pause doubles from `retryMs` up to `retryMaxMs`, and starts again from `retryMs`
 * once BIRD answered), and a BIRD that comes back is still noticed promptly (the restart watch
 * brings the waiting retry forward) however long the pause has grown.
 */

import assert from "node:assert/strict";
import { BirdControl } from "./control.ts";
import { smallBirdConfig as config } from "../tests/helpers/bird_configs.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { BirdDaemon, bootstrapBirdConfig } from "../tests/helpers/bird.ts";
import { eventually } from "../tests/helpers/eventually.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test({
  name: "BirdControl: retries while BIRD is down back off (doubling, capped) and start again " +
    "from the first pause after BIRD answered",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-birdbko");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const logs: Record<string, unknown>[] = [];
    let attempts = 0;
    const control = new BirdControl({
      ...bird.controlOptions(),
      coalesceMs: 10,
      retryMs: 20,
      retryMaxMs: 2_000,
      log: (f) => logs.push(f),
      onAttempt: () => attempts++,
    });
    try {
      assert.equal((await control.update(config("fd00:1::/64"))).result, "ok");
      await bird.kill("SIGKILL");
      const down = await control.update(config("fd00:2::/64"));
      assert.equal(down.result, "unreachable");
      const before = attempts;
      await sleep(3_000);
      // Pauses of 20, 40, 80, ... 1280 ms: at most 7 retries in 3 s (a 20 ms period: over 10,
      // even at 250 ms per retry's birdc and bird -p on a loaded machine).
      const retries = attempts - before;
      assert.ok(retries >= 3 && retries <= 7, `retries in 3 s: ${retries}`);
      const firstLine = logs.find((l) => /bird reload failed/.test(String(l.msg)));
      assert.equal(firstLine?.retryInMs, 20, JSON.stringify(logs));
      assert.match(String(firstLine?.msg), /retrying with backoff/);
      assert.match(control.status.error ?? "", /not reachable|Unable to connect/);

      // BIRD answers: the outage is over, the next one starts from the first pause again.
      await bird.launch();
      await eventually(
        "BIRD back",
        () => Promise.resolve(control.status.result),
        (r) => r === "ok",
      );
      logs.length = 0;
      await bird.kill("SIGKILL");
      assert.equal((await control.update(config("fd00:3::/64"))).result, "unreachable");
      const again = logs.find((l) => /bird reload failed/.test(String(l.msg)));
      assert.equal(again?.retryInMs, 20, JSON.stringify(logs));
    } finally {
      await control.close();
    }
  },
});

Deno.test({
  name: "BirdControl: a BIRD started again while the retry's pause is long is noticed by the " +
    "restart watch, not at the end of the pause",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-birdbkw");
    await using bird = await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") });
    const control = new BirdControl({
      ...bird.controlOptions(),
      coalesceMs: 10,
      // The first retry would come a minute after BIRD went down.
      retryMs: 60_000,
      watchMs: 100,
    });
    try {
      assert.equal((await control.update(config("fd00:1::/64"))).result, "ok");
      await bird.kill("SIGKILL");
      const down = await control.update(config("fd00:2::/64"));
      assert.equal(down.result, "unreachable");
      await bird.launch();
      const started = Date.now();
      await eventually(
        "the new config applied once BIRD answers",
        () => Promise.resolve({ ...control.status }),
        (s) => s.result === "ok",
        20_000,
        100,
      );
      console.log(`BIRD back: config applied after ${Date.now() - started} ms`);
      assert.match(await Deno.readTextFile(bird.configPath), /fd00:2::\/64/);
    } finally {
      await control.close();
    }
  },
});
