/**
 * Child process of the migration crash test: opens the store in `<stateDir>` and kills itself
 * with SIGKILL inside the migration's transaction, right after the step that reaches `<version>`
 * (a `kill -9` of the agent mid-upgrade: no finally blocks, no rollback, no close).
 *
 * Usage: deno run -A tests/helpers/migrate_and_die.ts <stateDir> <version>
 *
 * @module
 */

import { Store } from "../../agent/store.ts";

const [stateDir, version] = Deno.args;
Store.open(stateDir, {
  afterMigrationStep: (reached) => {
    if (reached === Number(version)) Deno.kill(Deno.pid, "SIGKILL");
  },
}).close();
// Reached only when no step reached `version`: the test reads this as "nothing was killed".
console.log("migrated without being killed");
