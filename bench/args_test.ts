import assert from "node:assert/strict";
import { integerArgs } from "./args.ts";

const OPTIONS = { pods: { default: 100, min: 1, max: 200 }, warmup: { default: 20 } };

Deno.test("integerArgs: defaults, both option forms, bounds inclusive", () => {
  assert.deepEqual(integerArgs(OPTIONS, []), { pods: 100, warmup: 20 });
  assert.deepEqual(integerArgs(OPTIONS, ["--pods", "200", "--warmup=0"]), { pods: 200, warmup: 0 });
  assert.deepEqual(integerArgs(OPTIONS, ["--pods=1"]), { pods: 1, warmup: 20 });
});

Deno.test("integerArgs: a value that is no integer in bounds is refused, naming the option", () => {
  for (
    const [args, message] of [
      [["--pods", "201"], '--pods: an integer from 1 to 200, not "201"'],
      [["--pods", "0"], '--pods: an integer from 1 to 200, not "0"'],
      [["--pods", "1e2x"], '--pods: an integer from 1 to 200, not "1e2x"'],
      [["--warmup", "2.5"], '--warmup: an integer ≥ 0, not "2.5"'],
      [["--warmup="], '--warmup: an integer ≥ 0, not ""'],
      [["--warmup=-1"], '--warmup: an integer ≥ 0, not "-1"'],
    ] as const
  ) {
    assert.throws(() => integerArgs(OPTIONS, [...args]), { message }, args.join(" "));
  }
  // A misspelt option is refused too, not ignored.
  assert.throws(() => integerArgs(OPTIONS, ["--pod", "5"]), /pod/);
});
