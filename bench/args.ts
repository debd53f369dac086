/**
 * A benchmark's integer options (`--pods 200`, `--rounds=5`): parsed, each checked against its
 * bounds, and refused with one message naming the option, so a typo stops the run at once
 * instead of running it on NaN (which a loop `i < NaN` runs zero times, printing empty figures).
 *
 * @module
 */

import { parseArgs } from "node:util";

/** One integer option: its default and inclusive bounds (`min` defaults to 0). */
export interface IntegerOption {
  default: number;
  min?: number;
  max?: number;
}

/**
 * The values of `options` as given in `args` (default: the command line), each an integer
 * within its bounds; unknown options are refused.
 *
 * @throws {Error} naming the option and its bounds when a value is not such an integer
 */
export function integerArgs<K extends string>(
  options: Record<K, IntegerOption>,
  args: string[] = Deno.args,
): Record<K, number> {
  const specs = Object.entries<IntegerOption>(options);
  const { values } = parseArgs({
    args,
    options: Object.fromEntries(
      specs.map(([name, o]) => [name, { type: "string" as const, default: String(o.default) }]),
    ),
  });
  const parsed: Record<string, number> = {};
  for (const [name, { min = 0, max }] of specs) {
    const text = String(values[name]);
    const value = Number(text);
    if (text.trim() === "" || !Number.isInteger(value) || value < min || value > (max ?? value)) {
      const range = max === undefined ? `≥ ${min}` : `from ${min} to ${max}`;
      throw new Error(`--${name}: an integer ${range}, not ${JSON.stringify(text)}`);
    }
    parsed[name] = value;
  }
  return parsed as Record<K, number>;
}
