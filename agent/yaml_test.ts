import assert from "node:assert/strict";
import { parseYaml, YamlError } from "./yaml.ts";

function fails(source: string, line: number, pattern: RegExp): void {
  assert.throws(() => parseYaml(source), (e: unknown) => {
    assert.ok(e instanceof YamlError, `not a YamlError: ${e}`);
    assert.equal(e.line, line, e.message);
    assert.match(e.message, pattern);
    assert.match(e.message, new RegExp(`^line ${line}: `));
    return true;
  });
}

Deno.test("a NodeConfig in block style", () => {
  const doc = `
# flock node configuration
---
apiVersion: flock.fritzlab.net/v1alpha1
kind: NodeConfig
metadata:
  name: node-1   # the node's name
spec:
  cidr6: fd00:f10c:0:1::/64
  cidr4: "10.244.1.0/24"
  mtu: 1500
  anycastCIDRs:
    - fd00:f10c:ffff::/112
    - '10.96.0.0/24'
  bgp:
    asn: 64512
    routerID: 10.0.0.1
    nodeMesh: true
    peers:
      - address: fd00::1
        asn: 65000
        password: "s3cr#t"
        bfd: false
      - address: 192.0.2.1
        asn: 4200000000
        multihop: 2
    gracefulRestart:
      enabled: true
      restartTime: 120
`;
  assert.deepEqual(parseYaml(doc), {
    apiVersion: "flock.fritzlab.net/v1alpha1",
    kind: "NodeConfig",
    metadata: { name: "node-1" },
    spec: {
      cidr6: "fd00:f10c:0:1::/64",
      cidr4: "10.244.1.0/24",
      mtu: 1500,
      anycastCIDRs: ["fd00:f10c:ffff::/112", "10.96.0.0/24"],
      bgp: {
        asn: 64512,
        routerID: "10.0.0.1",
        nodeMesh: true,
        peers: [
          { address: "fd00::1", asn: 65000, password: "s3cr#t", bfd: false },
          { address: "192.0.2.1", asn: 4200000000, multihop: 2 },
        ],
        gracefulRestart: { enabled: true, restartTime: 120 },
      },
    },
  });
});

Deno.test("a list may sit at its key's indentation; lists nest", () => {
  assert.deepEqual(parseYaml("a:\n- 1\n- x: 2\n  y: 3\nb: 4\n"), {
    a: [1, { x: 2, y: 3 }],
    b: 4,
  });
  assert.deepEqual(parseYaml("- - a\n  - b\n- - c\n"), [["a", "b"], ["c"]]);
  assert.deepEqual(parseYaml("-\n  k: v\n- \n"), [{ k: "v" }, null]);
});

Deno.test("scalars resolve with the YAML 1.2 core schema", () => {
  const doc = [
    "n1: ~",
    "n2: null",
    "n3:",
    "t: true",
    "f: False",
    "i: -42",
    "h: 0x1F",
    "o: 0o17",
    "fl: 1.5e3",
    "inf: -.inf",
    "yes: yes",
    "s1: 'it''s'",
    's2: "tab\\there \\u00e9 \\"q\\""',
    "s3: a#b",
    "s4: http://example.com/x",
    "s5: 1.2.3",
    "e1: []",
    "e2: {}",
    'l: [a, "b, c", 3, true]  # flow list',
    "'quoted key': 1",
  ].join("\n");
  assert.deepEqual(parseYaml(doc), {
    n1: null,
    n2: null,
    n3: null,
    t: true,
    f: false,
    i: -42,
    h: 31,
    o: 15,
    fl: 1500,
    inf: -Infinity,
    yes: "yes",
    s1: "it's",
    s2: 'tab\there é "q"',
    s3: "a#b",
    s4: "http://example.com/x",
    s5: "1.2.3",
    e1: [],
    e2: {},
    l: ["a", "b, c", 3, true],
    "quoted key": 1,
  });
});

Deno.test("empty documents, comments only, CRLF and a bare scalar", () => {
  assert.equal(parseYaml(""), null);
  assert.equal(parseYaml("# nothing\n\n---\n"), null);
  assert.deepEqual(parseYaml("a: 1\r\nb: 2\r\n"), { a: 1, b: 2 });
  assert.equal(parseYaml("hello"), "hello");
});

Deno.test("__proto__ is an ordinary key", () => {
  const v = parseYaml("__proto__:\n  polluted: true\n") as Record<string, unknown>;
  assert.ok(Object.hasOwn(v, "__proto__"));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

Deno.test("refuses what it does not understand, naming the line", () => {
  fails("a: 1\nb: &x 2\n", 2, /anchors/);
  fails("a: 1\nb: *x\n", 2, /aliases/);
  fails("a: !!str 1\n", 1, /tags/);
  fails("a: |\n  text\n", 1, /block scalars/);
  fails("a: >-\n  text\n", 1, /block scalars/);
  fails("a: one\n  two\n", 2, /multi-line/);
  fails('a: "one\n  two"\n', 1, /unterminated quoted string/);
  fails("a: {b: 1}\n", 1, /flow maps/);
  fails("a: [1, [2]]\n", 1, /nested flow/);
  fails("a: [1, 2\n", 1, /unterminated flow sequence/);
  fails("a: 1\na: 2\n", 2, /duplicate key "a"/);
  fails("a:\n\tb: 1\n", 2, /tabs/);
  fails("a: 1\n---\nb: 2\n", 2, /one document/);
  fails("%YAML 1.2\n---\na: 1\n", 1, /directives/);
  fails("? a\n: b\n", 1, /complex keys/);
  fails("a: b: c\n", 1, /unexpected ":"/);
  fails("a: 1\n  b: 2\n", 2, /indentation/);
  fails("a:\n  - 1\n  b: 2\n", 3, /./);
  fails("a:\n  b: 1\n c: 2\n", 3, /indentation/);
  fails("- a\nb: 1\n", 2, /./);
  fails("a: - b\n", 1, /own line/);
  fails('a: "x" y\n', 1, /after a quoted string/);
  fails('a: "\\q"\n', 1, /invalid escape/);
  fails("just\ntext\n", 1, /expected a map entry/);
  fails("a:\n  value on its own line\n", 2, /expected a map entry/);
});
