/**
 * The tree stays `deno fmt` and `deno lint` clean (the developers' standard): checked by the suite
 * CI runs, so a change that skipped `make check` does not land. Type checking needs no test of its
 * own: `deno test` checks every module the tests import.
 */

import assert from "node:assert/strict";
import { run } from "./helpers/exec.ts";
import { denoPath, REPO_ROOT } from "./helpers/tools.ts";

for (const [name, args] of [["fmt", ["fmt", "--check"]], ["lint", ["lint"]]] as const) {
  Deno.test(`style: deno ${name} finds nothing to change`, async () => {
    const r = await run([denoPath(), ...args], { cwd: REPO_ROOT });
    assert.equal(r.code, 0, `deno ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  });
}
