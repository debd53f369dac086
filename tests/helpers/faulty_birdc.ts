/**
 * A birdc for BirdControl tests against a real BIRD: the real birdc behind a small wrapper that
 * logs every call and, when a test arms it, injects one fault into the next `configure check` or
 * `configure`:
 * - `shutdown`: BIRD shuts down just before the command reaches it (the wrapper sends `down`
 *   and then the command on one connection, so BIRD answers `down` and the command gets no
 *   answer, or one BIRD gives while shutting down);
 * - `corrupt`: a syntax error is appended to the file the command names before the real birdc
 *   runs it, so BIRD finds a fault in a file that passed the step before (as when `configure`
 *   refuses what `configure check` passed).
 *
 * No BIRD reply is made up: every answer BirdControl judges is the real BIRD's.
 *
 * @module
 */

import { birdcPath } from "./tools.ts";

/** The fault {@link FaultyBirdc.arm} injects. */
export type BirdcFault = "shutdown" | "corrupt";

/** The line `corrupt` appends: BIRD reports a syntax error at a place in the file. */
export const CORRUPTION = "protocol device { foo; }";

/** A birdc that logs its calls and can inject a fault into one `configure` step. */
export class FaultyBirdc implements AsyncDisposable {
  private constructor(readonly dir: string) {}

  /** The wrapper's path (BirdControl's `birdcPath`). */
  get path(): string {
    return `${this.dir}/birdc`;
  }

  static async create(): Promise<FaultyBirdc> {
    const dir = await Deno.makeTempDir({ prefix: "flk-birdc-" });
    const real = birdcPath();
    if (/['\n]/.test(dir + real)) throw new Error(`unusable path: ${dir} ${real}`);
    // BirdControl calls `birdc [-v] -s SOCKET configure [check] "FILE"` (FILE in quotes, for
    // BIRD's parser).
    const script = `#!/bin/sh
echo "$*" >> '${dir}/calls'
case " $* " in
  *" configure check "*) step=check ;;
  *" configure "*) step=configure ;;
  *) step=none ;;
esac
sock=
prev=
file=
for arg in "$@"; do
  [ "$prev" = -s ] && sock=$arg
  prev=$arg
  file=$arg
done
file=\${file#\\"}
file=\${file%\\"}
if [ -e '${dir}/corrupt-'$step ]; then
  rm -f '${dir}/corrupt-'$step
  printf '\\n%s\\n' '${CORRUPTION}' >> "$file"
fi
if [ -e '${dir}/shutdown-'$step ]; then
  rm -f '${dir}/shutdown-'$step
  all="$*"
  printf 'down\\n%s\\n' "configure\${all#*configure}" | '${real}' -v -s "$sock"
  exit $?
fi
exec '${real}' "$@"
`;
    await Deno.writeTextFile(`${dir}/birdc`, script, { mode: 0o755 });
    return new FaultyBirdc(dir);
  }

  /** Injects `fault` into the next `configure check` or `configure`. */
  arm(step: "check" | "configure", fault: BirdcFault = "shutdown"): Promise<void> {
    return Deno.writeTextFile(`${this.dir}/${fault}-${step}`, "");
  }

  /** The calls so far (`-v -s SOCKET configure check "FILE"`, ...). */
  async calls(): Promise<string[]> {
    try {
      return (await Deno.readTextFile(`${this.dir}/calls`)).split("\n").filter((l) => l);
    } catch {
      return [];
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
