import assert from "node:assert/strict";
import {
  DumpIncompleteError,
  DumpInterruptedError,
  NetlinkError,
  NetlinkSocketError,
} from "../netlink/errors.ts";
import {
  EAGAIN,
  EBADF,
  EBUSY,
  EINTR,
  EINVAL,
  ENOBUFS,
  ENODEV,
  ENOMEM,
  EPERM,
} from "../netlink/ffi.ts";
import {
  isKernelBusy,
  kernelBusyCniError,
  KernelBusyError,
  retryWhileKernelBusy,
} from "./kernel_busy.ts";
import { FailureStreak, REMIND_EVERY } from "./failure_streak.ts";
import { CniCode } from "./protocol.ts";

/** EOPNOTSUPP: a kernel without the feature. */
const EOPNOTSUPP = 95;

const interrupted = () => new DumpInterruptedError("list links", "RTM_GETLINK", 6);

Deno.test("isKernelBusy: interrupted and incomplete dumps and lost replies, nothing else", () => {
  assert.ok(isKernelBusy(interrupted()));
  assert.ok(isKernelBusy(new DumpIncompleteError("list routes", 16)));
  assert.ok(isKernelBusy(new NetlinkSocketError("list routes", ENOBUFS)));
  assert.ok(isKernelBusy(new KernelBusyError("x", 8, 3500, interrupted())));
  assert.ok(!isKernelBusy(new NetlinkError("add route", 17)));
  assert.ok(!isKernelBusy(new Error("boom")));
  assert.ok(!isKernelBusy(undefined));
});

Deno.test("kernelBusyCniError: code 11 (the runtime retries) naming the dump", () => {
  const e = kernelBusyCniError(interrupted());
  assert.equal(e?.code, CniCode.tryAgainLater);
  assert.match(e!.message, /try again: list links: RTM_GETLINK dump interrupted 6 times/);
  assert.equal(kernelBusyCniError(new Error("boom")), undefined);
});

Deno.test("retryWhileKernelBusy: retries with doubling, capped pauses, then returns", async () => {
  const sleeps: number[] = [];
  let calls = 0;
  const value = await retryWhileKernelBusy("read", () => {
    if (++calls < 6) throw interrupted();
    return "whole";
  }, { sleep: (ms) => sleeps.push(ms), firstDelayMs: 100, maxDelayMs: 500 });
  assert.equal(value, "whole");
  assert.deepEqual(sleeps, [100, 200, 400, 500, 500]);
});

Deno.test("retryWhileKernelBusy: gives up after its tries with one clear error", async () => {
  const sleeps: number[] = [];
  await assert.rejects(
    () =>
      retryWhileKernelBusy("start-up reconcile: list the node's links", () => {
        throw interrupted();
      }, { sleep: (ms) => sleeps.push(ms) }),
    (e: unknown) => {
      assert.ok(e instanceof KernelBusyError);
      assert.equal(e.attempts, 8);
      assert.match(
        e.message,
        /^start-up reconcile: list the node's links: the kernel gave no whole answer in 8 tries .*RTM_GETLINK dump interrupted/,
      );
      return true;
    },
  );
  // The default bound: about 3.5 s of pauses in all.
  assert.deepEqual(sleeps, [50, 100, 200, 400, 800, 1000, 1000]);
});

Deno.test("retryWhileKernelBusy: any other error is thrown at once", async () => {
  let calls = 0;
  await assert.rejects(() =>
    retryWhileKernelBusy("read", () => {
      calls++;
      throw new NetlinkError("add route", 17);
    }, { sleep: () => assert.fail("no pause") }), NetlinkError);
  assert.equal(calls, 1);
});

Deno.test("retryWhileKernelBusy: the default pause really waits, without blocking", async () => {
  let calls = 0;
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 5);
  const started = performance.now();
  try {
    await retryWhileKernelBusy("read", () => {
      if (++calls === 1) throw interrupted();
    }, { firstDelayMs: 100 });
  } finally {
    clearInterval(ticker);
  }
  assert.ok(performance.now() - started >= 95);
  // Timers ran during the pause: the thread was free (a blocking sleep lets none run).
  assert.ok(ticks >= 3, `${ticks} ticks`);
});

Deno.test("FailureStreak: logs the start, a reminder, and the recovery — not every round", () => {
  const logs: Record<string, unknown>[] = [];
  const streak = new FailureStreak("anycast resync", (f) => logs.push(f));
  streak.succeeded();
  for (let i = 0; i < REMIND_EVERY + 5; i++) streak.failed(interrupted());
  assert.equal(streak.failures, REMIND_EVERY + 5);
  streak.succeeded();
  streak.succeeded();
  assert.deepEqual(logs.map((l) => [l.level, l.msg, l.failures]), [
    ["warn", "anycast resync failed; retrying every round, logged again once it recovers", 1],
    ["warn", "anycast resync still failing", REMIND_EVERY],
    ["info", "anycast resync recovered", REMIND_EVERY + 5],
  ]);
  assert.match(String(logs[0].error), /RTM_GETLINK dump interrupted/);
});

Deno.test("isKernelBusy: an errno the kernel stopped a dump with is 'not now' only when transient", () => {
  // Transient: lost replies, an interrupted call, a busy or short-of-memory kernel.
  for (const errno of [ENOBUFS, EINTR, EAGAIN, EBUSY, ENOMEM]) {
    assert.ok(isKernelBusy(new DumpIncompleteError("list routes", errno)), `errno ${errno}`);
    assert.ok(isKernelBusy(new NetlinkSocketError("list routes", errno)), `socket errno ${errno}`);
  }
  // Lasting: a bad filter, a kernel without the feature, no permission, a bad socket. Asking
  // again gives the same answer, so a runtime told "try again" would retry for ever.
  for (const errno of [EINVAL, EOPNOTSUPP, EPERM, ENODEV, EBADF]) {
    assert.ok(!isKernelBusy(new DumpIncompleteError("list routes", errno)), `errno ${errno}`);
    assert.ok(!isKernelBusy(new NetlinkSocketError("list routes", errno)), `socket errno ${errno}`);
    assert.equal(kernelBusyCniError(new DumpIncompleteError("list routes", errno)), undefined);
  }
});

Deno.test("retryWhileKernelBusy: a dump stopped with a lasting errno is thrown at once", async () => {
  let calls = 0;
  await assert.rejects(() =>
    retryWhileKernelBusy("read", () => {
      calls++;
      throw new DumpIncompleteError("list routes", EINVAL);
    }, { sleep: () => assert.fail("no pause") }), DumpIncompleteError);
  assert.equal(calls, 1);
});
