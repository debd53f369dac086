/**
 * A small, strict YAML subset: enough for hand-written configuration files, and an error with
 * the line number for everything else.
 *
 * Understood: block maps, block sequences (of scalars, of maps, nested), plain / single-quoted /
 * double-quoted scalars on one line, comments, a leading `---`, `[]`, `{}` and flow sequences of
 * scalars (`[a, "b", 3]`). Plain scalars resolve as in the YAML 1.2 core schema (null, booleans,
 * integers, floats, else strings).
 *
 * Refused: anchors, aliases, tags, block scalars (`|`, `>`), multi-line strings, flow maps with
 * content, complex keys, directives, several documents, tabs in indentation, duplicate keys.
 */

/** A YAML syntax error, or YAML outside the subset; `line` is 1-based. */
export class YamlError extends Error {
  constructor(readonly line: number, readonly reason: string) {
    super(`line ${line}: ${reason}`);
    this.name = "YamlError";
  }
}

/** A parsed value. */
export type YamlValue = null | boolean | number | string | YamlValue[] | {
  [key: string]: YamlValue;
};

interface Line {
  /** 1-based line number in the source. */
  no: number;
  indent: number;
  /** The line without its indentation (may still end in a comment). */
  text: string;
}

/** Parses one YAML document of the subset; an empty document is `null`. */
export function parseYaml(source: string): YamlValue {
  const lines = significantLines(source);
  if (lines.length === 0) return null;
  const parser = new Parser(lines);
  const value = parser.block(lines[0].indent);
  if (parser.pos < lines.length) {
    const l = lines[parser.pos];
    throw new YamlError(l.no, "unexpected content after the top-level list or map");
  }
  return value;
}

function significantLines(source: string): Line[] {
  const out: Line[] = [];
  const raw = source.replace(/^\uFEFF/, "").split(/\r?\n/);
  for (let i = 0; i < raw.length; i++) {
    const no = i + 1;
    const line = raw[i].replace(/\s+$/, "");
    const indent = line.length - line.replace(/^[ \t]*/, "").length;
    const text = line.slice(indent);
    if (text === "" || text.startsWith("#")) continue;
    if (line.slice(0, indent).includes("\t")) {
      throw new YamlError(no, "tabs are not allowed in indentation");
    }
    if (indent === 0 && (text === "---" || text.startsWith("--- "))) {
      if (out.length > 0) throw new YamlError(no, "only one document is supported");
      if (stripComment(text.slice(3)).trim() !== "") {
        throw new YamlError(no, "content after --- is not supported");
      }
      continue;
    }
    if (indent === 0 && text === "...") {
      throw new YamlError(no, "document end markers are not supported");
    }
    if (text.startsWith("%")) throw new YamlError(no, "directives are not supported");
    out.push({ no, indent, text });
  }
  return out;
}

/** `text` up to a comment (`#` at the start or after whitespace); quotes are not special. */
function stripComment(text: string): string {
  const m = /(^|\s)#/.exec(text);
  return m ? text.slice(0, m.index) : text;
}

function isSequenceItem(text: string): boolean {
  return text === "-" || text.startsWith("- ");
}

/** Splits `key: rest` (the key plain or quoted); `undefined` when the text is not a map entry. */
function splitMapEntry(text: string, no: number): { key: string; rest: string } | undefined {
  if (text.startsWith('"') || text.startsWith("'")) {
    const { value, end } = quoted(text, 0, no);
    const after = text.slice(end);
    if (!/^:(\s|$)/.test(after)) return undefined;
    return { key: value, rest: after.slice(1) };
  }
  const body = stripComment(text);
  const m = /:(\s|$)/.exec(body);
  if (!m) return undefined;
  const key = body.slice(0, m.index).trim();
  if (key === "") throw new YamlError(no, "empty key");
  if (key.startsWith("? ") || key === "?") {
    throw new YamlError(no, "complex keys are not supported");
  }
  checkPlainStart(key, no);
  return { key, rest: text.slice(m.index + 1) };
}

/** Refuses the YAML features a plain scalar must not start with. */
function checkPlainStart(text: string, no: number): void {
  const c = text[0];
  if (isSequenceItem(text)) {
    throw new YamlError(no, "a list must start on its own line, below its key");
  }
  if (c === "&") throw new YamlError(no, "anchors are not supported");
  if (c === "*") throw new YamlError(no, "aliases are not supported");
  if (c === "!") throw new YamlError(no, "tags are not supported");
  if (c === "|" || c === ">") {
    throw new YamlError(no, "block scalars (multi-line strings) are not supported");
  }
  if (c === "@" || c === "`") throw new YamlError(no, `a plain value cannot start with ${c}`);
  if (c === "{" || c === "}" || c === "[" || c === "]" || c === ",") {
    throw new YamlError(no, `unexpected ${c}`);
  }
}

/** Reads a quoted scalar starting at `text[start]`; `end` is the index after the closing quote. */
function quoted(text: string, start: number, no: number): { value: string; end: number } {
  const q = text[start];
  let out = "";
  for (let i = start + 1; i < text.length; i++) {
    const c = text[i];
    if (q === "'") {
      if (c !== "'") {
        out += c;
      } else if (text[i + 1] === "'") {
        out += "'";
        i++;
      } else {
        return { value: out, end: i + 1 };
      }
      continue;
    }
    if (c === '"') return { value: out, end: i + 1 };
    if (c !== "\\") {
      out += c;
      continue;
    }
    const e = text[++i];
    const simple: Record<string, string> = {
      "0": "\0",
      "b": "\b",
      "t": "\t",
      "n": "\n",
      "r": "\r",
      "e": "\x1b",
      " ": " ",
      '"': '"',
      "/": "/",
      "\\": "\\",
    };
    if (e !== undefined && e in simple) {
      out += simple[e];
      continue;
    }
    const width = e === "x" ? 2 : e === "u" ? 4 : e === "U" ? 8 : 0;
    const hex = text.slice(i + 1, i + 1 + width);
    if (width === 0 || !new RegExp(`^[0-9a-fA-F]{${width}}$`).test(hex)) {
      throw new YamlError(no, `invalid escape \\${e ?? ""} in a double-quoted string`);
    }
    out += String.fromCodePoint(parseInt(hex, 16));
    i += width;
  }
  throw new YamlError(no, "unterminated quoted string (multi-line strings are not supported)");
}

/** The value of a one-line scalar, quoted scalar or flow sequence of scalars. */
function inlineValue(text: string, no: number): YamlValue {
  const t = text.trim();
  if (t.startsWith('"') || t.startsWith("'")) {
    const { value, end } = quoted(t, 0, no);
    if (stripComment(t.slice(end)).trim() !== "") {
      throw new YamlError(no, "unexpected text after a quoted string");
    }
    return value;
  }
  if (t.startsWith("[")) return flowSequence(t, no);
  if (t.startsWith("{")) {
    if (/^\{\s*\}$/.test(stripComment(t).trim())) return {};
    throw new YamlError(no, "flow maps ({...}) are not supported; use a block map");
  }
  const plain = stripComment(t).trim();
  checkPlainStart(plain, no);
  if (/:(\s|$)/.test(plain)) throw new YamlError(no, `unexpected ":" in ${JSON.stringify(plain)}`);
  return resolvePlain(plain);
}

function flowSequence(text: string, no: number): YamlValue[] {
  const items: YamlValue[] = [];
  let i = 1;
  const skipSpace = () => {
    while (text[i] === " " || text[i] === "\t") i++;
  };
  skipSpace();
  if (text[i] === "]") {
    i++;
  } else {
    for (;;) {
      skipSpace();
      const c = text[i];
      if (c === '"' || c === "'") {
        const q = quoted(text, i, no);
        items.push(q.value);
        i = q.end;
      } else {
        const m = /^[^,\]]*/.exec(text.slice(i))!;
        const plain = m[0].trim();
        if (plain === "") throw new YamlError(no, "empty item in a flow sequence");
        if (/[[{]/.test(plain[0])) {
          throw new YamlError(no, "nested flow collections are not supported");
        }
        checkPlainStart(plain, no);
        if (/:(\s|$)|\s#/.test(plain)) {
          throw new YamlError(no, `unexpected content in a flow sequence: ${plain}`);
        }
        items.push(resolvePlain(plain));
        i += m[0].length;
      }
      skipSpace();
      if (text[i] === ",") {
        i++;
        continue;
      }
      if (text[i] === "]") {
        i++;
        break;
      }
      throw new YamlError(no, "unterminated flow sequence (it must end on the same line)");
    }
  }
  if (stripComment(text.slice(i)).trim() !== "") {
    throw new YamlError(no, "unexpected text after a flow sequence");
  }
  return items;
}

/** YAML 1.2 core schema resolution of a plain scalar. */
function resolvePlain(s: string): YamlValue {
  if (s === "" || s === "~" || /^(null|Null|NULL)$/.test(s)) return null;
  if (/^(true|True|TRUE)$/.test(s)) return true;
  if (/^(false|False|FALSE)$/.test(s)) return false;
  if (/^[-+]?[0-9]+$/.test(s)) return Number(s);
  if (/^0o[0-7]+$/.test(s)) return parseInt(s.slice(2), 8);
  if (/^0x[0-9a-fA-F]+$/.test(s)) return parseInt(s.slice(2), 16);
  if (/^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$/.test(s)) return Number(s);
  if (/^[-+]?\.(inf|Inf|INF)$/.test(s)) return s.startsWith("-") ? -Infinity : Infinity;
  if (/^\.(nan|NaN|NAN)$/.test(s)) return NaN;
  return s;
}

class Parser {
  pos = 0;
  constructor(readonly lines: Line[]) {}

  /** A block collection whose first line is at `pos` with exactly `indent`. */
  block(indent: number): YamlValue {
    const first = this.lines[this.pos];
    if (first.text === "?" || first.text.startsWith("? ")) {
      throw new YamlError(first.no, "complex keys are not supported");
    }
    if (isSequenceItem(first.text)) return this.sequence(indent);
    if (splitMapEntry(first.text, first.no)) return this.map(indent);
    // A lone scalar is only a document when it is the whole document.
    if (this.lines.length === 1) {
      this.pos++;
      return inlineValue(first.text, first.no);
    }
    throw new YamlError(first.no, "expected a map entry (key: value) or a list item (- ...)");
  }

  map(indent: number): Record<string, YamlValue> {
    const out: Record<string, YamlValue> = {};
    while (this.pos < this.lines.length) {
      const line = this.lines[this.pos];
      if (line.indent < indent) break;
      if (line.indent > indent) throw new YamlError(line.no, "unexpected indentation");
      if (isSequenceItem(line.text)) {
        throw new YamlError(line.no, "a list item where a map entry was expected");
      }
      const entry = splitMapEntry(line.text, line.no);
      if (!entry) {
        throw new YamlError(
          line.no,
          "expected a map entry (key: value); multi-line values are not supported",
        );
      }
      if (Object.hasOwn(out, entry.key)) {
        throw new YamlError(line.no, `duplicate key ${JSON.stringify(entry.key)}`);
      }
      this.pos++;
      const value = stripComment(entry.rest).trim() === ""
        ? this.nested(indent, true)
        : this.scalarLine(entry.rest, line.no);
      Object.defineProperty(out, entry.key, {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }

  sequence(indent: number): YamlValue[] {
    const out: YamlValue[] = [];
    while (this.pos < this.lines.length) {
      const line = this.lines[this.pos];
      if (line.indent < indent) break;
      if (line.indent > indent) throw new YamlError(line.no, "unexpected indentation");
      if (!isSequenceItem(line.text)) break;
      const content = line.text.slice(1).replace(/^ +/, "");
      if (content.startsWith("\t")) {
        throw new YamlError(line.no, "tabs are not allowed in indentation");
      }
      if (stripComment(content).trim() === "") {
        this.pos++;
        out.push(this.nested(indent, false));
        continue;
      }
      if (isSequenceItem(content) || splitMapEntry(content, line.no)) {
        // "- key: v" opens a map whose keys line up with "key".
        const inner = indent + (line.text.length - content.length);
        this.lines[this.pos] = { no: line.no, indent: inner, text: content };
        out.push(this.block(inner));
        continue;
      }
      this.pos++;
      out.push(this.scalarLine(content, line.no));
    }
    return out;
  }

  /** The value after `key:` or `-` with nothing else on the line. */
  nested(indent: number, inMap: boolean): YamlValue {
    const next = this.lines[this.pos];
    if (next && next.indent > indent) return this.block(next.indent);
    // YAML lets a map's list sit at the map's own indentation.
    if (inMap && next && next.indent === indent && isSequenceItem(next.text)) {
      return this.sequence(indent);
    }
    return null;
  }

  /** A value on the line of its key; a more indented line after it would be a continuation. */
  scalarLine(text: string, no: number): YamlValue {
    const value = inlineValue(text, no);
    const next = this.lines[this.pos];
    if (next && next.indent > this.lines[this.pos - 1].indent && next.no > no) {
      throw new YamlError(next.no, "unexpected indentation (multi-line values are not supported)");
    }
    return value;
  }
}
