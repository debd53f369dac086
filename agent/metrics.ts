/**
 * A small metrics registry (counters, gauges, histograms, with labels) and an encoder for the
 * Prometheus text exposition format 0.0.4.
 *
 * Why not a library: the well-kept Prometheus client for JavaScript, `prom-client`, is written
 * for Node (its default collectors and cluster aggregation lean on Node's process and worker
 * APIs) and is not among the npm packages this project's machines can install; the Deno-native
 * clients are published on JSR, which is unreachable here. The text format is small and stable,
 * so a hundred-odd lines that we test against the spec are cheaper than a dependency.
 *
 * Hot-path cost is one Map lookup per labelled update, or none when the caller keeps the child
 * that {@link Counter.labels} returns. Values that are cheaper to read than to track (pool use,
 * attachment counts) are filled by a `collect` callback just before each scrape.
 *
 * @module
 */

/** The content type of the text exposition format this module writes. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Default latency buckets in seconds, sized for a CNI request (ms to tens of seconds). */
export const DEFAULT_SECONDS_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.002,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** What every metric is declared with. */
export interface MetricOptions {
  name: string;
  help: string;
  labelNames?: readonly string[];
  /** Runs before each scrape, to set values that are read rather than tracked. */
  collect?: () => void | Promise<void>;
}

/** Options of a {@link Histogram}. */
export interface HistogramOptions extends MetricOptions {
  /** Upper bounds, ascending; `+Inf` is added. Default {@link DEFAULT_SECONDS_BUCKETS}. */
  buckets?: readonly number[];
}

type MetricType = "counter" | "gauge" | "histogram";

/** One line's worth: name suffix, label pairs (already escaped) and value. */
interface Sample {
  suffix: string;
  labels: string;
  value: number;
}

abstract class Metric<Child> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly collect?: () => void | Promise<void>;
  protected readonly children = new Map<string, { labels: string; child: Child }>();

  constructor(readonly type: MetricType, opts: MetricOptions) {
    if (!METRIC_NAME.test(opts.name)) throw new Error(`invalid metric name ${opts.name}`);
    for (const l of opts.labelNames ?? []) {
      if (!LABEL_NAME.test(l) || l.startsWith("__")) throw new Error(`invalid label name ${l}`);
    }
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = opts.labelNames ?? [];
    this.collect = opts.collect;
  }

  protected abstract newChild(): Child;
  protected abstract samplesOf(child: Child, labels: string): Sample[];

  /** The child for one combination of label values (created on first use). */
  labels(...values: string[]): Child {
    const key = values.join("\u0000");
    const found = this.children.get(key);
    if (found) return found.child;
    if (values.length !== this.labelNames.length) {
      throw new Error(
        `${this.name} takes ${this.labelNames.length} label values, got ${values.length}`,
      );
    }
    const labels = this.labelNames.map((n, i) => `${n}="${escapeLabelValue(values[i])}"`)
      .join(",");
    const child = this.newChild();
    this.children.set(key, { labels, child });
    return child;
  }

  /** Forgets every child (for gauges rebuilt from a list on each scrape). */
  reset(): void {
    this.children.clear();
  }

  /** The samples of every child, in creation order. */
  samples(): Sample[] {
    const out: Sample[] = [];
    for (const { labels, child } of this.children.values()) {
      out.push(...this.samplesOf(child, labels));
    }
    return out;
  }
}

/** A counter child: only goes up. */
export class CounterValue {
  value = 0;
  /** Adds `n` (default 1); a negative `n` is a programming error. */
  inc(n = 1): void {
    if (n < 0) throw new Error("a counter cannot go down");
    this.value += n;
  }
}

/** A gauge child: any value. */
export class GaugeValue {
  value = 0;
  set(v: number): void {
    this.value = v;
  }
  inc(n = 1): void {
    this.value += n;
  }
}

/** A histogram child: per-bucket counts, sum and count. */
export class HistogramValue {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }
  /** Records one observation. */
  observe(v: number): void {
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (v <= bounds[i]) {
        this.counts[i]++;
        break;
      }
    }
    this.sum += v;
    this.count++;
  }
}

/** A monotonically increasing count. */
export class Counter extends Metric<CounterValue> {
  constructor(opts: MetricOptions) {
    super("counter", opts);
  }
  /** Adds `n` to the unlabelled counter. */
  inc(n = 1): void {
    this.labels().inc(n);
  }
  protected newChild(): CounterValue {
    return new CounterValue();
  }
  protected samplesOf(c: CounterValue, labels: string): Sample[] {
    return [{ suffix: "", labels, value: c.value }];
  }
}

/** A value that goes up and down. */
export class Gauge extends Metric<GaugeValue> {
  constructor(opts: MetricOptions) {
    super("gauge", opts);
  }
  /** Sets the unlabelled gauge. */
  set(v: number): void {
    this.labels().set(v);
  }
  protected newChild(): GaugeValue {
    return new GaugeValue();
  }
  protected samplesOf(g: GaugeValue, labels: string): Sample[] {
    return [{ suffix: "", labels, value: g.value }];
  }
}

/** A distribution of observations in fixed buckets. */
export class Histogram extends Metric<HistogramValue> {
  readonly buckets: readonly number[];
  constructor(opts: HistogramOptions) {
    super("histogram", opts);
    if ((opts.labelNames ?? []).includes("le")) throw new Error("a histogram cannot use label le");
    const buckets = [...(opts.buckets ?? DEFAULT_SECONDS_BUCKETS)].filter((b) => b !== Infinity);
    for (let i = 1; i < buckets.length; i++) {
      if (!(buckets[i] > buckets[i - 1])) throw new Error(`${opts.name}: buckets must ascend`);
    }
    this.buckets = buckets;
  }
  /** Records one observation on the unlabelled histogram. */
  observe(v: number): void {
    this.labels().observe(v);
  }
  protected newChild(): HistogramValue {
    return new HistogramValue(this.buckets);
  }
  protected samplesOf(h: HistogramValue, labels: string): Sample[] {
    const sep = labels ? "," : "";
    const out: Sample[] = [];
    let cumulative = 0;
    for (let i = 0; i < h.bounds.length; i++) {
      cumulative += h.counts[i];
      out.push({
        suffix: "_bucket",
        labels: `${labels}${sep}le="${formatValue(h.bounds[i])}"`,
        value: cumulative,
      });
    }
    out.push({ suffix: "_bucket", labels: `${labels}${sep}le="+Inf"`, value: h.count });
    out.push({ suffix: "_sum", labels, value: h.sum });
    out.push({ suffix: "_count", labels, value: h.count });
    return out;
  }
}

type AnyMetric = Counter | Gauge | Histogram;

/** A set of metrics that is scraped together. */
export class Registry {
  readonly #metrics = new Map<string, AnyMetric>();
  readonly #collectors: { name: string; fn: () => void | Promise<void> }[] = [];

  /** Declares a counter. */
  counter(opts: MetricOptions): Counter {
    return this.#add(new Counter(opts));
  }
  /** Declares a gauge. */
  gauge(opts: MetricOptions): Gauge {
    return this.#add(new Gauge(opts));
  }
  /** Declares a histogram. */
  histogram(opts: HistogramOptions): Histogram {
    return this.#add(new Histogram(opts));
  }

  /** Runs `fn` before each scrape (to set several metrics from one read of the state). */
  beforeScrape(fn: () => void | Promise<void>, name = "collector"): void {
    this.#collectors.push({ name, fn });
  }

  #add<M extends AnyMetric>(m: M): M {
    if (this.#metrics.has(m.name)) throw new Error(`metric ${m.name} declared twice`);
    this.#metrics.set(m.name, m);
    if (m.collect) this.#collectors.push({ name: m.name, fn: m.collect });
    return m;
  }

  /**
   * Runs every collector (`collect` callbacks and {@link beforeScrape}), then writes all metrics in the text format. A collector
   * that throws leaves its metric as it was and does not spoil the scrape.
   *
   * @param onCollectError told about a collector that failed
   */
  async encode(onCollectError?: (name: string, e: unknown) => void): Promise<string> {
    for (const c of this.#collectors) {
      try {
        await c.fn();
      } catch (e) {
        onCollectError?.(c.name, e);
      }
    }
    const lines: string[] = [];
    for (const m of this.#metrics.values()) {
      lines.push(`# HELP ${m.name} ${escapeHelp(m.help)}`, `# TYPE ${m.name} ${m.type}`);
      for (const s of m.samples()) {
        const labels = s.labels ? `{${s.labels}}` : "";
        lines.push(`${m.name}${s.suffix}${labels} ${formatValue(s.value)}`);
      }
    }
    return lines.join("\n") + "\n";
  }
}

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`);
}

function escapeHelp(v: string): string {
  return v.replace(/[\\\n]/g, (c) => c === "\n" ? "\\n" : "\\\\");
}

/** Formats a sample value as the format wants it (`+Inf`, `-Inf`, `NaN`, Go-style floats). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}
