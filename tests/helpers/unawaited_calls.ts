/**
 * Finds calls of named async functions whose promise is dropped: a call that stands alone as an
 * expression statement (`retryWhileKernelBusy("x", read);`, `if (c) anycast.syncAll();`). deno
 * lint has no floating-promise rule, and a helper that became async under its old name keeps
 * type-checking at every caller that forgot `await`: the caller then goes on without waiting,
 * and a failure becomes an unhandled rejection instead of the caller's error.
 *
 * A call counts as handled when its promise is awaited, returned (also as an arrow function's
 * body), assigned, passed as an argument or array/object element, combined into a larger
 * expression, chained on (`.catch(…)`, `.then(…)`), or discarded on purpose with `void`.
 *
 * It reads text, not a syntax tree: a small tokenizer that skips comments, strings, template
 * literals and regular expressions, then looks at the token before each call's callee chain
 * (`this.#routing!.applyConfig(`) and the one after its closing parenthesis. Good enough for
 * code `deno fmt` formats (semicolons always written); not a TypeScript parser.
 *
 * @module
 */

/** One token of source text: its text and the 1-based line it starts on. */
interface Token {
  text: string;
  line: number;
  /** word: identifier, keyword or private name; lit: string, template, regex or number. */
  kind: "word" | "lit" | "punct";
}

/** A dropped promise: where the call stands and the called name. */
export interface UnawaitedCall {
  name: string;
  line: number;
  /** The source line, trimmed, for the failure message. */
  text: string;
}

/** Multi-character operators, longest first (so `?.` is not read as `?` then `.`). */
const OPERATORS = [
  ">>>=",
  "...",
  "===",
  "!==",
  "**=",
  "<<=",
  ">>=",
  "&&=",
  "||=",
  "??=",
  "=>",
  "?.",
  "==",
  "!=",
  "<=",
  ">=",
  "&&",
  "||",
  "??",
  "++",
  "--",
  "+=",
  "-=",
  "*=",
  "/=",
  "%=",
  "&=",
  "|=",
  "^=",
  "**",
  "<<",
];

/** Keywords after which a `/` starts a regular expression, not a division. */
const REGEX_AFTER_WORDS = new Set([
  "return",
  "typeof",
  "instanceof",
  "in",
  "of",
  "new",
  "delete",
  "void",
  "throw",
  "case",
  "do",
  "else",
  "yield",
  "await",
]);

/**
 * Tokens a callee chain may start right after while the call still is a statement of its own:
 * the end of the previous statement or block, a control statement's condition, `else`, `do`.
 */
const STATEMENT_START = new Set([";", "{", "}", ")", "else", "do"]);

/** Splits `source` into tokens, dropping comments and white space. */
export function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  let line = 1;
  const n = source.length;

  /** Advances past a quoted string starting at `i` (the quote), counting lines. */
  const skipQuoted = (quote: string) => {
    i++;
    while (i < n && source[i] !== quote) {
      if (source[i] === "\\") i++;
      else if (source[i] === "\n") line++;
      i++;
    }
    i++;
  };

  /** Advances past a template literal starting at `i`, its `${…}` parts included. */
  const skipTemplate = () => {
    i++;
    while (i < n && source[i] !== "`") {
      if (source[i] === "\\") i++;
      else if (source[i] === "\n") line++;
      else if (source[i] === "$" && source[i + 1] === "{") {
        i += 2;
        skipBalancedCode("}");
        continue;
      }
      i++;
    }
    i++;
  };

  /** Advances past code up to and including the `close` that balances it. */
  const skipBalancedCode = (close: string) => {
    let depth = 0;
    while (i < n) {
      const c = source[i];
      if (c === "'" || c === '"') skipQuoted(c);
      else if (c === "`") skipTemplate();
      else if (c === "/" && source[i + 1] === "/") skipLineComment();
      else if (c === "/" && source[i + 1] === "*") skipBlockComment();
      else {
        if (c === "\n") line++;
        if (c === "{") depth++;
        if (c === close && depth-- === 0) {
          i++;
          return;
        }
        i++;
      }
    }
  };

  const skipLineComment = () => {
    while (i < n && source[i] !== "\n") i++;
  };

  const skipBlockComment = () => {
    const end = source.indexOf("*/", i + 2);
    const stop = end < 0 ? n : end + 2;
    for (; i < stop; i++) if (source[i] === "\n") line++;
  };

  /** Whether a `/` here starts a regular expression (by the token before it). */
  const regexAllowed = () => {
    const prev = tokens.at(-1);
    if (!prev) return true;
    if (prev.kind === "lit") return false;
    if (prev.kind === "word") return REGEX_AFTER_WORDS.has(prev.text);
    return ![")", "]", "}"].includes(prev.text);
  };

  const skipRegex = () => {
    i++;
    let inClass = false;
    while (i < n && source[i] !== "\n") {
      const c = source[i];
      if (c === "\\") i++;
      else if (c === "[") inClass = true;
      else if (c === "]") inClass = false;
      else if (c === "/" && !inClass) break;
      i++;
    }
    i++;
    while (i < n && /[a-z]/i.test(source[i])) i++;
  };

  while (i < n) {
    const c = source[i];
    const startLine = line;
    const start = i;
    if (c === "\n") {
      line++;
      i++;
    } else if (/\s/.test(c)) {
      i++;
    } else if (c === "/" && source[i + 1] === "/") {
      skipLineComment();
    } else if (c === "/" && source[i + 1] === "*") {
      skipBlockComment();
    } else if (c === "'" || c === '"') {
      skipQuoted(c);
      tokens.push({ text: source.slice(start, i), line: startLine, kind: "lit" });
    } else if (c === "`") {
      skipTemplate();
      tokens.push({ text: "`…`", line: startLine, kind: "lit" });
    } else if (c === "/" && regexAllowed()) {
      skipRegex();
      tokens.push({ text: source.slice(start, i), line: startLine, kind: "lit" });
    } else if (/[A-Za-z_$#]/.test(c)) {
      i++;
      while (i < n && /[\w$]/.test(source[i])) i++;
      tokens.push({ text: source.slice(start, i), line: startLine, kind: "word" });
    } else if (/[0-9]/.test(c)) {
      i++;
      while (i < n && /[\w.]/.test(source[i])) i++;
      tokens.push({ text: source.slice(start, i), line: startLine, kind: "lit" });
    } else {
      const op = OPERATORS.find((o) => source.startsWith(o, i)) ?? c;
      i += op.length;
      tokens.push({ text: op, line: startLine, kind: "punct" });
    }
  }
  return tokens;
}

const OPENER: Record<string, string> = { ")": "(", "]": "[", "}": "{" };

/** The index of the bracket that opens the group closed at `close`, or -1. */
function openerOf(tokens: Token[], close: number): number {
  const want = OPENER[tokens[close].text];
  let depth = 0;
  for (let k = close; k >= 0; k--) {
    if (tokens[k].text === tokens[close].text) depth++;
    else if (tokens[k].text === want && --depth === 0) return k;
  }
  return -1;
}

/** The index of the bracket that closes the group opened at `open`, or -1. */
function closerOf(tokens: Token[], open: number): number {
  const want = Object.entries(OPENER).find(([, o]) => o === tokens[open].text)![0];
  let depth = 0;
  for (let k = open; k < tokens.length; k++) {
    if (tokens[k].text === tokens[open].text) depth++;
    else if (tokens[k].text === want && --depth === 0) return k;
  }
  return -1;
}

/** After a name at `i`: the index of its call's `(`, type arguments skipped; -1 if no call. */
function callParen(tokens: Token[], i: number): number {
  let k = i + 1;
  if (tokens[k]?.text === "<") {
    // Type arguments: `<`/`>` balanced, `>>` closing two (`=>` inside a type is no bracket).
    let depth = 0;
    for (; k < tokens.length; k++) {
      const t = tokens[k].text;
      if (t === "<") depth++;
      else if (/^>+$/.test(t)) depth -= t.length;
      else if ([";", "{", "}"].includes(t)) return -1;
      if (depth <= 0) break;
    }
    k++;
  }
  return tokens[k]?.text === "(" ? k : -1;
}

/**
 * Where the callee chain ending in the name at `i` begins: `this.#routing!.applyConfig`,
 * `d.anycast?.syncAll`, `make(x).removeVeth`, `new Datapath(h).removeVeth`.
 */
function chainStart(tokens: Token[], i: number): number {
  let j = i;
  while (j >= 2 && (tokens[j - 1].text === "." || tokens[j - 1].text === "?.")) {
    let k = j - 2;
    while (k >= 0 && tokens[k].text === "!") k--;
    while (k >= 0 && [")", "]"].includes(tokens[k].text)) {
      const open = openerOf(tokens, k);
      if (open < 0) return j;
      k = open - 1;
      // A call or index on a name (`make(x)`), else a parenthesised expression (`(await x)`).
      if (k < 0 || tokens[k].kind !== "word" || REGEX_AFTER_WORDS.has(tokens[k].text)) {
        k = open;
        break;
      }
      while (k >= 0 && tokens[k].text === "!") k--;
    }
    if (k < 0) return j;
    j = k;
  }
  if (tokens[j - 1]?.text === "new") j--;
  return j;
}

/** Whether the name at `i` is being declared (`async function f(`, `async m(`, `m(): T {`). */
function isDeclaration(tokens: Token[], i: number, close: number): boolean {
  const prev = tokens[i - 1]?.text;
  if (["function", "async", "get", "set", "static"].includes(prev ?? "")) return true;
  const next = tokens[close + 1]?.text;
  return (prev === undefined || [";", "{", "}"].includes(prev)) && (next === "{" || next === ":");
}

/**
 * The calls of `names` in `source` that stand alone as statements, their promise dropped; see
 * the module doc for what counts as handled.
 */
export function unawaitedCalls(source: string, names: Iterable<string>): UnawaitedCall[] {
  const wanted = new Set(names);
  const tokens = tokenize(source);
  const lines = source.split("\n");
  const found: UnawaitedCall[] = [];
  tokens.forEach((t, i) => {
    if (t.kind !== "word" || !wanted.has(t.text)) return;
    const open = callParen(tokens, i);
    if (open < 0) return;
    const close = closerOf(tokens, open);
    if (close < 0 || isDeclaration(tokens, i, close)) return;
    // Chained on: `.catch(…)`, `.then(…)`, `.finally(…)` take the promise over.
    if ([".", "?.", "["].includes(tokens[close + 1]?.text ?? "")) return;
    const start = chainStart(tokens, i);
    const before = tokens[start - 1];
    if (before && !STATEMENT_START.has(before.text)) return;
    found.push({ name: t.text, line: t.line, text: lines[t.line - 1]?.trim() ?? "" });
  });
  return found;
}

/**
 * Whether `source` declares `name` as an async function or method (`async function name(`,
 * `async name(`, `async #name(`), so a guard's list of names can notice a rename.
 */
export function declaresAsync(source: string, name: string): boolean {
  const tokens = tokenize(source);
  return tokens.some((t, i) =>
    t.text === name && t.kind === "word" && callParen(tokens, i) > 0 &&
    (tokens[i - 1]?.text === "async" ||
      (tokens[i - 1]?.text === "function" && tokens[i - 2]?.text === "async"))
  );
}
