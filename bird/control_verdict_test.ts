/**
 * BirdControl against a real BIRD: a reload BIRD never judged (it shut down while the config
 * was on its way) is retried until BIRD runs the text, while a config BIRD found a fault in is
 * not sent again.
 *
 * The birdc BirdControl runs is the real one behind a small wrapper (tests/helpers/
 * faulty_birdc.ts) that logs every call and, when the test arms it, has BIRD shut down just
 * before one step's command reaches it, or corrupts the file one step names. No BIRD reply is
 * made up.
 */

import assert from "node:assert/strict";
import { BirdControl } from "./control.ts";
import { birdConfigWithPeer, smallBirdConfig } from "../tests/helpers/bird_configs.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { BirdDaemon, bootstrapBirdConfig } from "../tests/helpers/bird.ts";
import { eventually } from "../tests/helpers/eventually.ts";
import { FaultyBirdc } from "../tests/helpers/faulty_birdc.ts";

/** A real BIRD in a namespace, driven by a BirdControl through a {@link FaultyBirdc}. */
interface Lab extends AsyncDisposable {
  bird: BirdDaemon;
  birdc: FaultyBirdc;
  control: BirdControl;
  logs: Record<string, unknown>[];
  /** Reload attempts BirdControl reported (its `onAttempt`). */
  attempts(): number;
}

async function lab(name: string, retryMs: number): Promise<Lab> {
  const stack = new AsyncDisposableStack();
  try {
    const ns = stack.use(await TestNamespace.create(name));
    const bird = stack.use(
      await BirdDaemon.start(ns, { config: bootstrapBirdConfig("10.9.9.9") }),
    );
    const birdc = stack.use(await FaultyBirdc.create());
    const logs: Record<string, unknown>[] = [];
    let attempts = 0;
    const control = new BirdControl({
      ...bird.controlOptions(),
      birdcPath: birdc.path,
      coalesceMs: 10,
      retryMs,
      log: (f) => logs.push(f),
      onAttempt: () => attempts++,
    });
    // Closed first: its retries must not run birdc against a removed BIRD.
    stack.defer(() => control.close());
    const owned = stack.move();
    return {
      bird,
      birdc,
      control,
      logs,
      attempts: () => attempts,
      [Symbol.asyncDispose]: () => owned.disposeAsync(),
    };
  } catch (err) {
    await stack.disposeAsync();
    throw err;
  }
}

const runsPeer = async (bird: BirdDaemon) =>
  bird.running && /^peer_\S+\s+BGP/m.test((await bird.birdc(["show", "protocols"])).stdout);

for (const step of ["configure", "check"] as const) {
  Deno.test({
    name: `BirdControl: BIRD shutting down under '${
      step === "check" ? "configure check" : "configure"
    }' is no rejection: retried until BIRD, started again on a stale file, runs the new text`,
    ...ROOT_ONLY,
    async fn() {
      await using l = await lab("flk-birdvrd", 200);
      const { bird, birdc, control, logs } = l;
      const wanted = birdConfigWithPeer();
      assert.equal((await control.update(smallBirdConfig("fd00:1::/64"))).result, "ok");

      await birdc.arm(step);
      const s = await control.update(wanted);
      // Under 'check', BIRD may still answer the check before it exits: the configure then
      // finds it gone (unreachable). Either way no verdict, and a retry.
      const noVerdict = step === "check" ? ["failed", "unreachable"] : ["failed"];
      assert.ok(noVerdict.includes(s.result), `no verdict on the text: ${JSON.stringify(s)}`);
      if (s.result === "failed") {
        assert.match(s.error ?? "", /found no fault in it.*retrying in 200 ms/s);
      }
      await assert.rejects(Deno.stat(`${bird.configPath}.rejected`), Deno.errors.NotFound);

      // BIRD is gone; started again on a stale file (its config reset while it was down).
      await bird.kill("SIGTERM");
      await Deno.writeTextFile(bird.configPath, bootstrapBirdConfig("10.9.9.9"));
      await bird.launch();
      await eventually(
        "BIRD running the new text",
        async () => ({ status: { ...control.status }, peer: await runsPeer(bird) }),
        (v) => v.status.result === "ok" && v.peer,
        30_000,
        100,
      );
      assert.equal(await Deno.readTextFile(bird.configPath), wanted);
      assert.ok(!logs.some((f) => /rejected/.test(String(f.msg))), JSON.stringify(logs));
    },
  });
}

Deno.test({
  name: "BirdControl: a config BIRD found a fault in is not sent again, and logged once",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-birdbad", 100);
    const { bird, birdc, control, logs, attempts } = l;
    const rejections = () => logs.filter((f) => /bird rejected/.test(String(f.msg))).length;
    assert.equal((await control.update(smallBirdConfig("fd00:1::/64"))).result, "ok");
    const good = (await birdc.calls()).length;

    const bad = smallBirdConfig("fd00:6::/64").replace(
      "protocol device {",
      "protocol device { foo;",
    );
    const s = await control.update(bad);
    assert.equal(s.result, "rejected");
    assert.match(s.error ?? "", /syntax error/);
    assert.equal(rejections(), 1);
    assert.equal((await birdc.calls()).length, good + 1, "one 'configure check', no configure");

    // Many retry periods later, and the same text asked for again: not sent, not logged, no
    // attempt reported (the agent's reload metrics count those).
    const reported = attempts();
    await new Promise((r) => setTimeout(r, 600));
    const again = await control.update(bad);
    assert.equal(again.result, "rejected");
    assert.equal(again.lastAttempt, s.lastAttempt);
    assert.equal(again.unchanged, s.unchanged + 1);
    assert.equal((await birdc.calls()).length, good + 1, JSON.stringify(await birdc.calls()));
    assert.equal(rejections(), 1);
    assert.equal(attempts(), reported);
    assert.match(await Deno.readTextFile(bird.configPath), /fd00:1::\/64/, "the good one stays");

    // A good text is taken; the bad one afterwards is tried (and refused) once more.
    assert.equal((await control.update(smallBirdConfig("fd00:7::/64"))).result, "ok");
    assert.equal((await control.update(bad)).result, "rejected");
    assert.equal(rejections(), 2);
  },
});

Deno.test({
  name:
    "BirdControl: a config BIRD refuses at 'configure' after its check passed leaves the last " +
    "accepted text in bird.conf (a BIRD restart reads a good one) and the refused one beside it",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-birdcfr", 100);
    const { bird, birdc, control, logs } = l;
    const good = smallBirdConfig("fd00:1::/64");
    assert.equal((await control.update(good)).result, "ok");

    const refused = smallBirdConfig("fd00:2::/64");
    await birdc.arm("configure", "corrupt");
    const s = await control.update(refused);
    assert.equal(s.result, "rejected", JSON.stringify(s));
    // BIRD's verdict on the file, at the place of the appended line.
    assert.match(s.error ?? "", /bird\.conf:\d+:\d+ /);
    assert.equal(await Deno.readTextFile(bird.configPath), good);
    assert.equal((await Deno.stat(bird.configPath)).mode! & 0o777, 0o600);
    assert.equal(await Deno.readTextFile(`${bird.configPath}.rejected`), refused);
    assert.equal((await Deno.stat(`${bird.configPath}.rejected`)).mode! & 0o777, 0o600);
    await assert.rejects(Deno.stat(`${bird.configPath}.new`), Deno.errors.NotFound);

    // BIRD restarted (a crash, a node reboot) starts on the file: the last accepted config.
    await bird.kill("SIGTERM");
    await bird.launch();
    assert.match((await bird.birdc(["eval", "NODE_CIDRS6"])).stdout, /fd00:1::\/64/);
    assert.equal((await control.update(refused)).result, "rejected", "not sent again");
    assert.equal((await control.update(birdConfigWithPeer())).result, "ok");
    assert.ok(await runsPeer(bird));
    assert.ok(!logs.some((f) => /no config was accepted/.test(String(f.msg))));
  },
});

Deno.test({
  name: "BirdControl: a first config BIRD refuses at 'configure' is kept beside bird.conf, and " +
    "the log says no accepted one could be put back",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-birdcf1", 100);
    const { bird, birdc, control, logs } = l;
    const refused = smallBirdConfig("fd00:2::/64");
    await birdc.arm("configure", "corrupt");
    assert.equal((await control.update(refused)).result, "rejected");
    assert.equal(await Deno.readTextFile(`${bird.configPath}.rejected`), refused);
    const note = logs.find((f) => /no config was accepted/.test(String(f.msg)));
    assert.ok(note, JSON.stringify(logs));
    assert.equal(note.file, bird.configPath);
  },
});

Deno.test({
  name: "BirdControl: a text BIRD runs already is not handed over again, and no reload attempt " +
    "is reported for it (flock_bird_reloads_total counts birdc configure runs)",
  ...ROOT_ONLY,
  async fn() {
    await using l = await lab("flk-birdsame", 100);
    const { birdc, control, attempts } = l;
    const good = smallBirdConfig("fd00:1::/64");
    const first = await control.update(good);
    assert.equal(first.result, "ok");
    assert.equal(attempts(), 1);
    const calls = (await birdc.calls()).length;

    const again = await control.update(good);
    assert.equal(again.result, "ok");
    assert.equal(again.unchanged, first.unchanged + 1);
    assert.equal(again.reloads, first.reloads);
    assert.equal(attempts(), 1, "a no-op reported as a reload attempt");
    assert.equal((await birdc.calls()).length, calls, "birdc ran for an unchanged text");
  },
});
