/**
 * Structured logs: one JSON object per line with `ts`, `level` and `msg` first, then the
 * fields of the event. Lines below the configured level are dropped before they are built.
 *
 * The agent logs to stderr (the container runtime collects it); the CNI plugin never logs to
 * stdout, because libcni parses stdout as the result.
 *
 * @module
 */

/** Log levels, least to most severe. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** The sink every component takes: fields of one event, `level` defaulting to `info`. */
export type LogFn = (fields: Record<string, unknown>) => void;

/** Whether `text` names a log level. */
export function isLogLevel(text: unknown): text is LogLevel {
  return typeof text === "string" && (LOG_LEVELS as readonly string[]).includes(text);
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Lowest level written; default `info`. */
  level?: LogLevel;
  /** Where each line goes (without its newline); default stderr. */
  write?: (line: string) => void;
  /** Clock, for tests. */
  now?: () => Date;
}

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * Returns a {@link LogFn} writing JSON lines at or above `level`. An unknown `level` field in
 * an event counts as `info`, so a typo never hides an event.
 */
export function createLogger(opts: LoggerOptions = {}): LogFn {
  const min = RANK[opts.level ?? "info"];
  const write = opts.write ?? ((line: string) => console.error(line));
  const now = opts.now ?? (() => new Date());
  return (fields) => {
    const level = isLogLevel(fields.level) ? fields.level : "info";
    if (RANK[level] < min) return;
    write(formatLogLine(now(), level, fields));
  };
}

/** One JSON line: `ts`, `level`, `msg` in that order, then the other defined fields. */
export function formatLogLine(
  ts: Date,
  level: LogLevel,
  fields: Record<string, unknown>,
): string {
  const { level: _level, msg, ts: _ts, ...rest } = fields;
  try {
    return JSON.stringify({ ts: ts.toISOString(), level, msg: String(msg ?? ""), ...rest });
  } catch (e) {
    // A field that cannot be serialised (a cycle, a BigInt) must not lose the event.
    return JSON.stringify({
      ts: ts.toISOString(),
      level,
      msg: String(msg ?? ""),
      logError: `unserialisable fields: ${(e as Error).message}`,
    });
  }
}
