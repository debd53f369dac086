import assert from "node:assert/strict";
import { join } from "node:path";
import {
  CONFLIST_NAME,
  DEFAULT_BIN_DIR,
  DEFAULT_CONF_DIR,
  DEFAULT_NETWORK_NAME,
  install,
  parseInstallArgs,
  renderConflist,
} from "./install.ts";
import { DEFAULT_SOCKET } from "./protocol.ts";

Deno.test("parseInstallArgs: defaults", () => {
  assert.deepEqual(parseInstallArgs([]), {
    binDir: DEFAULT_BIN_DIR,
    confDir: DEFAULT_CONF_DIR,
    networkName: DEFAULT_NETWORK_NAME,
    socketPath: DEFAULT_SOCKET,
    pluginExtras: undefined,
  });
  assert.equal(DEFAULT_NETWORK_NAME, "flock");
});

Deno.test("parseInstallArgs: --network-name, its older spelling --name, --log-file", () => {
  assert.equal(parseInstallArgs(["--network-name", "pods-a"]).networkName, "pods-a");
  assert.equal(parseInstallArgs(["--network-name=flock.v6_1"]).networkName, "flock.v6_1");
  assert.equal(parseInstallArgs(["--name", "legacy"]).networkName, "legacy");
  assert.deepEqual(parseInstallArgs(["--log-file", "/var/log/flock/cni.log"]).pluginExtras, {
    logFile: "/var/log/flock/cni.log",
  });
});

Deno.test("parseInstallArgs: a bad or doubled network name is refused, naming the flag", () => {
  for (const bad of ["", "-x", "a b", "a/b", "é"]) {
    assert.throws(() => parseInstallArgs(["--network-name", bad]), /--network-name/, bad);
  }
  assert.throws(
    () => parseInstallArgs(["--network-name", "a", "--name", "b"]),
    /--network-name and --name/,
  );
  assert.throws(() => parseInstallArgs(["--bogus"]), /bogus/);
});

Deno.test("renderConflist: the network name and the plugin entry a runtime reads", () => {
  const conf = JSON.parse(renderConflist({ networkName: "pods-a", socketPath: "/run/x.sock" }));
  assert.equal(conf.name, "pods-a");
  assert.equal(conf.cniVersion, "1.0.0");
  assert.deepEqual(conf.plugins, [{
    type: "flock",
    agentSocket: "/run/x.sock",
    capabilities: { "io.kubernetes.cri.pod-annotations": true, ips: true },
  }]);
});

Deno.test("install: writes binary and conflist once, then reports nothing changed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-install-" });
  try {
    const source = join(dir, "flock-src");
    await Deno.writeTextFile(source, "#!/bin/sh\n");
    const options = {
      ...parseInstallArgs([
        "--bin-dir",
        join(dir, "bin"),
        "--conf-dir",
        join(dir, "net.d"),
        "--network-name",
        "pods-a",
      ]),
      source,
    };
    assert.deepEqual(await install(options), { binary: true, conflist: true });
    assert.deepEqual(await install(options), { binary: false, conflist: false });
    const conf = JSON.parse(await Deno.readTextFile(join(dir, "net.d", CONFLIST_NAME)));
    assert.equal(conf.name, "pods-a");
    assert.equal((await Deno.stat(join(dir, "bin", "flock"))).mode! & 0o777, 0o755);
    assert.deepEqual(await install({ ...options, networkName: "pods-b" }), {
      binary: false,
      conflist: true,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseInstallArgs: a relative --socket or --log-file is refused, naming the flag", () => {
  // The runtime execs the plugin from its own working directory (/ for containerd), so a
  // relative path in the conflist would name a different file on every runtime.
  assert.throws(() => parseInstallArgs(["--socket", "flock.sock"]), /--socket .*absolute/);
  assert.throws(() => parseInstallArgs(["--log-file", "log/cni.log"]), /--log-file .*absolute/);
  assert.equal(parseInstallArgs(["--socket", "/run/x.sock"]).socketPath, "/run/x.sock");
});

/** Options installing `source` into `<dir>/bin` and `<dir>/net.d`. */
function optionsIn(dir: string, source: string) {
  return {
    ...parseInstallArgs(["--bin-dir", join(dir, "bin"), "--conf-dir", join(dir, "net.d")]),
    source,
  };
}

Deno.test("install: temp files a killed install left are removed on the next run, others kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-install-" });
  try {
    const source = join(dir, "flock-src");
    await Deno.writeTextFile(source, "#!/bin/sh\n");
    const options = optionsIn(dir, source);
    await install(options);
    const uuid = () => crypto.randomUUID();
    const leftovers = [
      join(dir, "bin", `.flock.${uuid()}.tmp`),
      join(dir, "bin", `.${uuid()}.tmp`), // the naming of earlier versions
      join(dir, "net.d", `.${CONFLIST_NAME}.${uuid()}.tmp`),
    ];
    const others = [
      join(dir, "bin", "ptp"),
      join(dir, "net.d", `.10-other.conflist.${uuid()}.tmp`),
    ];
    for (const path of [...leftovers, ...others]) await Deno.writeTextFile(path, "partial");
    // Nothing to change, yet the leftovers go.
    assert.deepEqual(await install(options), { binary: false, conflist: false });
    for (const path of leftovers) {
      assert.equal(await Deno.lstat(path).then(() => true, () => false), false, path);
    }
    for (const path of others) assert.equal(await Deno.readTextFile(path), "partial", path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("install: a binary differing in its last byte of several MiB is replaced, by rename", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-install-" });
  try {
    const source = join(dir, "flock-src");
    // Crosses the 1 MiB compare chunks, and ends in a partial one.
    const content = new Uint8Array(3 * (1 << 20) + 5).fill(7);
    await Deno.writeFile(source, content);
    const options = optionsIn(dir, source);
    assert.deepEqual(await install(options), { binary: true, conflist: true });
    assert.deepEqual(await install(options), { binary: false, conflist: false });
    // A runtime exec'ing the old binary holds its inode: it must stay whole and unchanged.
    const installed = join(dir, "bin", "flock");
    using running = await Deno.open(installed, { read: true });
    content[content.length - 1] = 8;
    await Deno.writeFile(source, content);
    assert.deepEqual(await install(options), { binary: true, conflist: false });
    assert.deepEqual(await Deno.readFile(installed), content);
    const old = new Uint8Array(content.length);
    let filled = 0;
    while (filled < old.length) filled += (await running.read(old.subarray(filled)))!;
    assert.equal(old[old.length - 1], 7, "the running inode was not written into");
    // Same bytes but no longer executable: installed again.
    await Deno.chmod(installed, 0o644);
    assert.deepEqual(await install(options), { binary: true, conflist: false });
    assert.equal((await Deno.stat(installed)).mode! & 0o777, 0o755);
    assert.deepEqual(
      [...Deno.readDirSync(join(dir, "bin"))].map((e) => e.name),
      ["flock"],
      "no temp file left",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("install: a directory lock another install holds fails after the bound, naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-install-" });
  try {
    const source = join(dir, "flock-src");
    await Deno.writeTextFile(source, "#!/bin/sh\n");
    const options = { ...optionsIn(dir, source), lockTimeoutMs: 300 };
    await Deno.mkdir(options.binDir);
    // The other install: flock(2) of the bin dir through another open file description.
    using other = await Deno.open(options.binDir, { read: true });
    await other.lock(true);
    const started = performance.now();
    await assert.rejects(install(options), (e: Error) => {
      assert.ok(e.message.includes(options.binDir), e.message);
      assert.match(e.message, /another flock install holds the lock/);
      return true;
    });
    assert.ok(performance.now() - started < 10_000);
    assert.deepEqual([...Deno.readDirSync(options.binDir)], [], "nothing written while locked");
    await other.unlock();
    assert.deepEqual(await install(options), { binary: true, conflist: true });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
