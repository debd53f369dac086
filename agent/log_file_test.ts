import assert from "node:assert/strict";
import { join } from "node:path";
import { appendLogLineSync, LOG_ROTATE_BYTES } from "./log_file.ts";
import { UnsafePathError } from "./safe_path.ts";

async function withTempDir(fn: (dir: string) => void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-log-" });
  try {
    fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("appendLogLineSync: creates a private file in a private new directory", () =>
  withTempDir((dir) => {
    const path = join(dir, "var/log/flock/cni.log");
    appendLogLineSync(path, "one\n");
    appendLogLineSync(path, "two\n");
    assert.equal(Deno.readTextFileSync(path), "one\ntwo\n");
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
    assert.equal(Deno.statSync(join(dir, "var/log/flock")).mode! & 0o777, 0o700);
    assert.equal(LOG_ROTATE_BYTES, 10 * 1024 * 1024);
  }));

Deno.test("appendLogLineSync: rotates at the limit to <name>.1, keeping one generation", () =>
  withTempDir((dir) => {
    const path = join(dir, "cni.log");
    const line = "x".repeat(99) + "\n";
    for (let i = 0; i < 9; i++) appendLogLineSync(path, line, 1000);
    assert.equal(Deno.statSync(path).size, 900);
    appendLogLineSync(path, line, 1000); // reaches 1000: rotated after the write
    assert.equal(Deno.statSync(`${path}.1`).size, 1000);
    assert.throws(() => Deno.statSync(path), Deno.errors.NotFound);
    appendLogLineSync(path, "new\n", 1000);
    assert.equal(Deno.readTextFileSync(path), "new\n");
    // The next rotation replaces the older generation: never more than two files.
    for (let i = 0; i < 10; i++) appendLogLineSync(path, line, 1000);
    assert.equal(Deno.readTextFileSync(`${path}.1`).slice(0, 4), "new\n");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["cni.log.1"]);
  }));

Deno.test("appendLogLineSync: a symlink at the name is refused and its target untouched", () =>
  withTempDir((dir) => {
    const target = join(dir, "victim");
    Deno.writeTextFileSync(target, "precious\n");
    const logs = join(dir, "logs");
    Deno.mkdirSync(logs, { mode: 0o1777 });
    Deno.chmodSync(logs, 0o1777);
    Deno.symlinkSync(target, join(logs, "cni.log"));
    assert.throws(
      () => appendLogLineSync(join(logs, "cni.log"), "line\n"),
      (e: Error) =>
        e instanceof UnsafePathError && /cni\.log: it is a symbolic link/.test(e.message),
    );
    assert.equal(Deno.readTextFileSync(target), "precious\n");
  }));

Deno.test("appendLogLineSync: a log dir others may write to is refused, naming it", () =>
  withTempDir((dir) => {
    const logs = join(dir, "logs");
    Deno.mkdirSync(logs);
    Deno.chmodSync(logs, 0o777);
    assert.throws(
      () => appendLogLineSync(join(logs, "cni.log"), "line\n"),
      (e: Error) => e instanceof UnsafePathError && e.message.includes(`log directory ${logs}`),
    );
    assert.deepEqual([...Deno.readDirSync(logs)], []);
  }));

Deno.test("appendLogLineSync: Ubuntu's /var/log (0775 root:syslog) above the log dir is accepted", () =>
  withTempDir((dir) => {
    // Ubuntu's rsyslog makes /var/log 0775 root:syslog; docs/operations.md suggests
    // --log-file=/var/log/flock/cni.log. Only the log directory itself must be flock's alone.
    const varLog = join(dir, "var/log");
    Deno.mkdirSync(varLog, { recursive: true });
    Deno.chmodSync(varLog, 0o775);
    if (Deno.uid() === 0) Deno.chownSync(varLog, 0, 104);
    const path = join(varLog, "flock/cni.log");
    appendLogLineSync(path, "one\n");
    appendLogLineSync(path, "two\n");
    assert.equal(Deno.readTextFileSync(path), "one\ntwo\n");
  }));

Deno.test("appendLogLineSync: under a group-writable ancestor, the log dir itself stays strict", () =>
  withTempDir((dir) => {
    const varLog = join(dir, "var/log");
    Deno.mkdirSync(join(varLog, "flock"), { recursive: true });
    Deno.chmodSync(varLog, 0o775);
    Deno.chmodSync(join(varLog, "flock"), 0o775);
    assert.throws(
      () => appendLogLineSync(join(varLog, "flock/cni.log"), "line\n"),
      (e: Error) =>
        e instanceof UnsafePathError && /flock is writable by its group/.test(e.message),
    );
  }));

Deno.test("appendLogLineSync: an other-writable ancestor without the sticky bit is still refused", () =>
  withTempDir((dir) => {
    const open = join(dir, "open");
    Deno.mkdirSync(join(open, "flock"), { recursive: true });
    Deno.chmodSync(open, 0o777);
    assert.throws(
      () => appendLogLineSync(join(open, "flock/cni.log"), "line\n"),
      (e: Error) =>
        e instanceof UnsafePathError &&
        /lies under .*open, which is writable by others/.test(e.message),
    );
  }));
