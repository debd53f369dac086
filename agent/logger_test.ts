import assert from "node:assert/strict";
import { createLogger, formatLogLine, isLogLevel } from "./logger.ts";

const at = new Date("2026-01-02T03:04:05.678Z");

Deno.test("logger: one JSON object per line with ts, level and msg first", () => {
  const lines: string[] = [];
  const log = createLogger({ write: (l) => lines.push(l), now: () => at });
  log({ msg: "ADD ok", containerId: "c1", ips: ["fd00::2"], durationMs: 1.5, gone: undefined });
  assert.equal(lines.length, 1);
  assert.equal(
    lines[0],
    '{"ts":"2026-01-02T03:04:05.678Z","level":"info","msg":"ADD ok","containerId":"c1",' +
      '"ips":["fd00::2"],"durationMs":1.5}',
  );
});

Deno.test("logger: levels below the threshold are dropped; unknown levels count as info", () => {
  const lines: string[] = [];
  const log = createLogger({ level: "warn", write: (l) => lines.push(l), now: () => at });
  log({ level: "debug", msg: "d" });
  log({ level: "info", msg: "i" });
  log({ level: "bogus", msg: "b" });
  log({ level: "warn", msg: "w" });
  log({ level: "error", msg: "e" });
  assert.deepEqual(lines.map((l) => JSON.parse(l).msg), ["w", "e"]);
  const all: string[] = [];
  createLogger({ level: "debug", write: (l) => all.push(l) })({ level: "debug", msg: "d" });
  assert.equal(all.length, 1);
  assert.ok(isLogLevel("error") && !isLogLevel("trace"));
});

Deno.test("logger: an unserialisable field does not lose the event", () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const line = JSON.parse(formatLogLine(at, "error", { msg: "x", big: 1n, cyclic }));
  assert.equal(line.msg, "x");
  assert.equal(line.level, "error");
  assert.match(line.logError, /unserialisable/);
});
