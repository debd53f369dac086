import assert from "node:assert/strict";
import { CniError, SUPPORTED_VERSIONS } from "./protocol.ts";
import { Prng } from "../tests/helpers/prng.ts";
import {
  isValidNetworkName,
  parseCniInvocation,
  requestedVersion,
  validateContainerId,
  validateIfname,
} from "./cni_input.ts";

const CONFIG = JSON.stringify({ cniVersion: "1.0.0", name: "flock", type: "flock" });
const ENV = {
  CNI_COMMAND: "ADD",
  CNI_CONTAINERID: "abc123",
  CNI_NETNS: "/var/run/netns/cni-1",
  CNI_IFNAME: "eth0",
  CNI_ARGS: "K8S_POD_NAME=p;K8S_POD_NAMESPACE=default",
  CNI_PATH: "/opt/cni/bin",
};

/** Runs `fn`, expects a CniError and returns it. */
function cniErrorOf(fn: () => unknown): CniError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof CniError, `expected CniError, got ${e}`);
    return e;
  }
  assert.fail("expected a CniError");
}

Deno.test("parseCniInvocation: a valid ADD becomes the RPC request", () => {
  const req = parseCniInvocation(ENV, CONFIG);
  assert.deepEqual(req, {
    command: "ADD",
    containerId: "abc123",
    netns: "/var/run/netns/cni-1",
    ifname: "eth0",
    args: "K8S_POD_NAME=p;K8S_POD_NAMESPACE=default",
    config: { cniVersion: "1.0.0", name: "flock", type: "flock" },
  });
});

Deno.test("parseCniInvocation: every supported version is accepted", () => {
  for (const v of SUPPORTED_VERSIONS) {
    const req = parseCniInvocation(ENV, JSON.stringify({ cniVersion: v, name: "n" }));
    assert.equal(req.config.cniVersion, v);
  }
});

Deno.test("parseCniInvocation: unknown and missing CNI_COMMAND give code 4 with libcni's text", () => {
  const e = cniErrorOf(() => parseCniInvocation({ ...ENV, CNI_COMMAND: "FROB" }, CONFIG));
  assert.equal(e.code, 4);
  assert.equal(e.message, "unknown CNI_COMMAND: FROB");
  assert.equal(cniErrorOf(() => parseCniInvocation({}, CONFIG)).code, 4);
  // VERSION is the plugin's own business, never an RPC.
  assert.equal(cniErrorOf(() => parseCniInvocation({ CNI_COMMAND: "VERSION" }, CONFIG)).code, 4);
});

Deno.test("parseCniInvocation: undecodable stdin gives code 6", () => {
  for (const stdin of ["", "   ", "{", '{"cniVersion":"1.0.0"', "[]", "null", "42", '"s"', "{]}"]) {
    const e = cniErrorOf(() => parseCniInvocation(ENV, stdin));
    assert.equal(e.code, 6, `stdin ${JSON.stringify(stdin)}`);
    assert.match(e.message, /decode/);
  }
});

Deno.test("parseCniInvocation: missing or unsupported cniVersion gives code 1", () => {
  for (
    const config of [{ name: "n" }, { cniVersion: "", name: "n" }, { cniVersion: 1, name: "n" }]
  ) {
    assert.equal(cniErrorOf(() => parseCniInvocation(ENV, JSON.stringify(config))).code, 1);
  }
  const e = cniErrorOf(() => parseCniInvocation(ENV, '{"cniVersion":"0.2.0","name":"n"}'));
  assert.equal(e.code, 1);
  assert.match(e.message, /0\.2\.0/);
  assert.match(e.details!, /1\.1\.0/);
});

Deno.test("parseCniInvocation: missing name gives code 7", () => {
  for (const config of [{ cniVersion: "1.0.0" }, { cniVersion: "1.0.0", name: "" }]) {
    assert.equal(cniErrorOf(() => parseCniInvocation(ENV, JSON.stringify(config))).code, 7);
  }
});

Deno.test("parseCniInvocation: a name off the spec's pattern is code 7 naming the field", () => {
  for (const name of ["-flock", ".flock", "_x", "a b", "a/b", "a:b", "é", "net\n", 7, true]) {
    for (const command of ["ADD", "DEL", "CHECK", "GC", "STATUS"]) {
      const config = JSON.stringify({ cniVersion: "1.1.0", name, type: "flock" });
      const e = cniErrorOf(() => parseCniInvocation({ ...ENV, CNI_COMMAND: command }, config));
      assert.equal(e.code, 7, `${command} ${JSON.stringify(name)}`);
      assert.match(e.message, /\bname\b/);
    }
  }
  for (const name of ["flock", "Pods-A", "0net", "flock.v6_1", "a-", "x".repeat(200)]) {
    const req = parseCniInvocation(ENV, JSON.stringify({ cniVersion: "1.1.0", name }));
    assert.equal(req.config.name, name);
  }
  assert.equal(isValidNetworkName("flock.v6_1"), true);
  assert.equal(isValidNetworkName("flock/../x"), false);
});

Deno.test("parseCniInvocation: env required per verb, code 4 naming the variable", () => {
  const cases: [Record<string, string | undefined>, string][] = [
    [{ ...ENV, CNI_CONTAINERID: undefined }, "CNI_CONTAINERID"],
    [{ ...ENV, CNI_CONTAINERID: "" }, "CNI_CONTAINERID"],
    [{ ...ENV, CNI_IFNAME: undefined }, "CNI_IFNAME"],
    [{ ...ENV, CNI_NETNS: "" }, "CNI_NETNS"],
    [{ ...ENV, CNI_COMMAND: "CHECK", CNI_NETNS: undefined }, "CNI_NETNS"],
    [{ ...ENV, CNI_COMMAND: "DEL", CNI_IFNAME: "" }, "CNI_IFNAME"],
    [{ ...ENV, CNI_COMMAND: "DEL", CNI_CONTAINERID: undefined }, "CNI_CONTAINERID"],
    [{ ...ENV, CNI_NETNS: "relative/path" }, "CNI_NETNS"],
  ];
  for (const [env, variable] of cases) {
    const e = cniErrorOf(() => parseCniInvocation(env, CONFIG));
    assert.equal(e.code, 4, JSON.stringify(env));
    assert.ok(e.message.includes(variable), `${e.message} should name ${variable}`);
  }
});

Deno.test("parseCniInvocation: DEL tolerates an empty or absent CNI_NETNS", () => {
  assert.equal(parseCniInvocation({ ...ENV, CNI_COMMAND: "DEL", CNI_NETNS: "" }, CONFIG).netns, "");
  const env = { ...ENV, CNI_COMMAND: "DEL", CNI_NETNS: undefined };
  assert.equal(parseCniInvocation(env, CONFIG).netns, "");
});

Deno.test("parseCniInvocation: GC and STATUS need no container variables", () => {
  for (const command of ["GC", "STATUS"]) {
    const req = parseCniInvocation({ CNI_COMMAND: command, CNI_CONTAINERID: "bad id!" }, CONFIG);
    assert.deepEqual(
      { ...req, config: undefined },
      { command, containerId: "", netns: "", ifname: "", args: "", config: undefined },
    );
  }
});

Deno.test("validateContainerId: the spec's pattern", () => {
  for (const ok of ["a", "0", "abc-DEF_1.2", "f".repeat(64)]) {
    assert.equal(validateContainerId(ok), ok);
  }
  for (const bad of ["", "-a", ".a", "_a", "a b", "a/b", "a:b", "ä", "a\n"]) {
    const e = cniErrorOf(() => validateContainerId(bad));
    assert.equal(e.code, 4);
    assert.match(e.message, /CNI_CONTAINERID/);
  }
});

Deno.test("validateIfname: libcni's rules", () => {
  for (const ok of ["eth0", "a", "x".repeat(15), "net-1.2"]) assert.equal(validateIfname(ok), ok);
  const bad = ["", ".", "..", "x".repeat(16), "a/b", "a:b", "a b", "a\tb", "a\0b", "ééééééééé"];
  for (const name of bad) {
    const e = cniErrorOf(() => validateIfname(name));
    assert.equal(e.code, 4, JSON.stringify(name));
    assert.match(e.message, /CNI_IFNAME/);
  }
});

Deno.test("requestedVersion: reads cniVersion, never throws", () => {
  assert.equal(requestedVersion('{"cniVersion":"0.4.0"}'), "0.4.0");
  for (const s of ["", "{", "null", "[]", '{"cniVersion":4}', '{"cniVersion":""}']) {
    assert.equal(requestedVersion(s), undefined);
  }
});

Deno.test("parseCniInvocation fuzz: 1,000 random inputs never escape as anything but CniError", () => {
  const r = new Prng(0xf10c);
  const commands = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "add", undefined];
  for (let i = 0; i < 1000; i++) {
    const env: Record<string, string | undefined> = {
      CNI_COMMAND: r.pick(commands),
      CNI_CONTAINERID: r.chance(0.5) ? "c" + i : r.string(20),
      CNI_NETNS: r.chance(0.5) ? "/run/netns/x" : r.string(20),
      CNI_IFNAME: r.chance(0.5) ? "eth0" : r.string(20),
      CNI_ARGS: r.string(30),
    };
    const stdin = r.chance(0.5)
      ? r.string(200)
      : JSON.stringify(r.chance(0.5) ? cniishConfig(r, 3) : r.json(3, CNI_WORDS));
    try {
      const req = parseCniInvocation(env, stdin);
      assert.equal(typeof req.config, "object");
    } catch (e) {
      assert.ok(e instanceof CniError, `input ${i} threw ${e}`);
      assert.ok([1, 4, 6, 7].includes(e.code), `code ${e.code}`);
      assert.equal(typeof e.message, "string");
    }
  }
});

/** Words a CNI config is made of, so random values reach past the first field checks. */
const CNI_WORDS = ["cniVersion", "name", "type", "prevResult", "1.0.0", "0.4.0", "flock"];

/** An object that often looks like a CNI config, with random values where it does not. */
function cniishConfig(r: Prng, depth: number): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (r.chance(0.8)) o.cniVersion = r.chance(0.7) ? "1.0.0" : r.json(0, CNI_WORDS);
  if (r.chance(0.8)) o.name = r.chance(0.7) ? "flock" : r.json(0, CNI_WORDS);
  if (r.chance(0.5)) o.prevResult = r.json(depth, CNI_WORDS);
  return o;
}

Deno.test("validateIfname: '%' is refused (the kernel would name the link after a pattern)", () => {
  // "eth%d" made the kernel pick "eth0" while the Result said "eth%d"; CHECK then always failed.
  for (const name of ["eth%d", "%d", "a%"]) {
    const e = cniErrorOf(() => validateIfname(name));
    assert.equal(e.code, 4, JSON.stringify(name));
    assert.match(e.message, /CNI_IFNAME.*%/);
  }
});
