import assert from "node:assert/strict";
import { escapeLabelValue, formatValue, Registry } from "./metrics.ts";

Deno.test("metrics: counters, gauges and labels in the 0.0.4 text format", async () => {
  const r = new Registry();
  const c = r.counter({ name: "x_total", help: "Things.", labelNames: ["verb", "result"] });
  c.labels("ADD", "ok").inc();
  c.labels("ADD", "ok").inc(2);
  c.labels("DEL", "error").inc();
  const g = r.gauge({ name: "x_free", help: "Free ones.\nSecond line with \\." });
  g.set(2 ** 64);
  assert.equal(
    await r.encode(),
    [
      "# HELP x_total Things.",
      "# TYPE x_total counter",
      'x_total{verb="ADD",result="ok"} 3',
      'x_total{verb="DEL",result="error"} 1',
      "# HELP x_free Free ones.\\nSecond line with \\\\.",
      "# TYPE x_free gauge",
      "x_free 18446744073709552000",
      "",
    ].join("\n"),
  );
});

Deno.test("metrics: histogram buckets are cumulative and end with +Inf, _sum, _count", async () => {
  const r = new Registry();
  const h = r.histogram({ name: "lat_seconds", help: "L.", labelNames: ["c"], buckets: [0.1, 1] });
  for (const v of [0.05, 0.1, 0.5, 3]) h.labels("ADD").observe(v);
  const text = await r.encode();
  assert.match(text, /^lat_seconds_bucket\{c="ADD",le="0.1"\} 2$/m);
  assert.match(text, /^lat_seconds_bucket\{c="ADD",le="1"\} 3$/m);
  assert.match(text, /^lat_seconds_bucket\{c="ADD",le="\+Inf"\} 4$/m);
  assert.match(text, /^lat_seconds_sum\{c="ADD"\} 3.65$/m);
  assert.match(text, /^lat_seconds_count\{c="ADD"\} 4$/m);
  const unlabelled = new Registry().histogram({ name: "u", help: "U.", buckets: [1] });
  unlabelled.observe(0.5);
  assert.throws(() => new Registry().histogram({ name: "b", help: "", buckets: [2, 1] }));
});

Deno.test("metrics: escaping, special values and bad declarations", () => {
  assert.equal(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  assert.equal(formatValue(Infinity), "+Inf");
  assert.equal(formatValue(-Infinity), "-Inf");
  assert.equal(formatValue(NaN), "NaN");
  assert.equal(formatValue(0.25), "0.25");
  const r = new Registry();
  r.counter({ name: "dup", help: "" });
  assert.throws(() => r.gauge({ name: "dup", help: "" }), /twice/);
  assert.throws(() => r.gauge({ name: "1bad", help: "" }), /invalid metric name/);
  assert.throws(() => r.gauge({ name: "ok", help: "", labelNames: ["__x"] }), /label/);
  const c = r.counter({ name: "c", help: "", labelNames: ["a"] });
  assert.throws(() => c.labels("x", "y"), /takes 1 label/);
  assert.throws(() => c.labels("x").inc(-1), /down/);
});

Deno.test("metrics: collectors run before each scrape; a failing one spoils nothing", async () => {
  const r = new Registry();
  let n = 0;
  r.gauge({ name: "g", help: "", collect: () => {} }).set(1);
  const polled = r.gauge({ name: "polled", help: "" });
  r.beforeScrape(() => polled.set(++n));
  r.beforeScrape(() => {
    throw new Error("boom");
  }, "broken");
  const failures: string[] = [];
  await r.encode((name) => failures.push(name));
  const text = await r.encode((name) => failures.push(name));
  assert.match(text, /^polled 2$/m);
  assert.match(text, /^g 1$/m);
  assert.deepEqual(failures, ["broken", "broken"]);
});
