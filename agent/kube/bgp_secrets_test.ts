import assert from "node:assert/strict";
import { parseNodeConfig } from "../config.ts";
import { ApiError } from "./api.ts";
import {
  BgpSecrets,
  decodePassword,
  passwordCondition,
  type PasswordProblem,
  secretRefsOf,
} from "./bgp_secrets.ts";

const PASSWORD = "Tor-1-s3cret";

const config = parseNodeConfig(
  {
    cidr6: "fd00:1::/64",
    bgp: {
      asn: 64512,
      peers: [
        { address: "fd00:a::1", asn: 65000, passwordSecretRef: { name: "bgp", key: "tor-1" } },
        { address: "fd00:a::2", asn: 65000, passwordSecretRef: { name: "bgp", key: "tor-1" } },
        { address: "fd00:a::3", asn: 65000, passwordSecretRef: { name: "bgp", key: "tor-3" } },
        { address: "fd00:a::4", asn: 65000, passwordSecretRef: { name: "other", key: "k" } },
        { address: "fd00:a::5", asn: 65000, password: "inline" },
      ],
    },
  },
  "t",
  { secretRefs: true },
);

/** One peer whose password is the Secret `bgp`'s key `k`. */
const ONE_PEER = parseNodeConfig(
  {
    cidr6: "fd00:1::/64",
    bgp: {
      asn: 1,
      peers: [{ address: "fd00:a::1", asn: 2, passwordSecretRef: { name: "bgp", key: "k" } }],
    },
  },
  "t",
  { secretRefs: true },
);

/** Secrets of one namespace as the API serves them (base64 data); counts the GETs. */
class SecretStore {
  secrets = new Map<string, Record<string, string>>();
  gets: string[] = [];
  /** When set, every read fails like an unreachable API server. */
  down = false;

  set(name: string, values: Record<string, string>): void {
    this.secrets.set(
      name,
      Object.fromEntries(Object.entries(values).map(([k, v]) => [k, btoa(v)])),
    );
  }

  read = (namespace: string, name: string): Promise<Record<string, string>> => {
    this.gets.push(`${namespace}/${name}`);
    if (this.down) return Promise.reject(new ApiError(undefined, "connection refused"));
    const data = this.secrets.get(name);
    if (!data) return Promise.reject(new ApiError(404, `secrets "${name}" not found`));
    return Promise.resolve(data);
  };
}

function secretsFor(store: SecretStore, logs: Record<string, unknown>[], onChange = () => {}) {
  return new BgpSecrets({
    namespace: "kube-system",
    readSecret: store.read,
    onChange,
    log: (f) => logs.push(f),
    refreshMs: 60_000,
    retryMs: 10,
  });
}

Deno.test("secretRefsOf: each referenced key once, with the peers that use it", () => {
  const refs = secretRefsOf(config);
  assert.deepEqual([...refs.keys()], ["bgp/tor-1", "bgp/tor-3", "other/k"]);
  assert.deepEqual(refs.get("bgp/tor-1")?.peers, ["fd00:a::1", "fd00:a::2"]);
  assert.equal(secretRefsOf(undefined).size, 0);
});

Deno.test("decodePassword: usable values only, and no message ever shows the value", () => {
  const data = (v: string) => ({ k: btoa(v) });
  assert.deepEqual(decodePassword(data(PASSWORD), "k"), { password: PASSWORD });
  const problems: [Record<string, string>, RegExp][] = [
    [{}, /the Secret has no key "k"/],
    [{ k: "***" }, /not valid base64/],
    [{ k: btoa("\xff\xfe") }, /not UTF-8/],
    [data(""), /is empty/],
    [data(`${PASSWORD}\n`), /line break or NUL \(created from a file that ends in a newline\?\)/],
    [data('a"b'), /quote/],
    // BIRD would cut the password off at a NUL.
    [data("ab\0cd"), /NUL/],
    [data("x".repeat(81)), /longer than 80 bytes/],
  ];
  for (const [d, message] of problems) {
    const r = decodePassword(d, "k");
    assert.ok("problem" in r, JSON.stringify(d));
    assert.match(r.problem, message);
    assert.ok(!r.problem.includes(PASSWORD));
  }
});

Deno.test("BgpSecrets: reads each Secret once, reports what is missing, never logs a password", async () => {
  const store = new SecretStore();
  store.set("bgp", { "tor-1": PASSWORD, unrelated: "x" });
  const logs: Record<string, unknown>[] = [];
  const secrets = secretsFor(store, logs);
  try {
    await secrets.use(config);
    assert.deepEqual(store.gets.sort(), ["kube-system/bgp", "kube-system/other"]);
    assert.deepEqual([...secrets.passwords], [["bgp/tor-1", PASSWORD]]);
    assert.deepEqual(
      secrets.problems,
      [
        {
          secret: "kube-system/bgp",
          key: "tor-3",
          peers: ["fd00:a::3"],
          reason: 'the Secret has no key "tor-3"',
          kept: false,
        },
        {
          secret: "kube-system/other",
          key: "k",
          peers: ["fd00:a::4"],
          reason: "the Secret does not exist",
          kept: false,
        },
      ] satisfies PasswordProblem[],
    );
    const errors = logs.filter((l) => l.level === "error");
    assert.deepEqual(errors.map((l) => [l.secret, l.key]), [
      ["kube-system/bgp", "tor-3"],
      ["kube-system/other", "k"],
    ]);
    assert.ok(!JSON.stringify(logs).includes(PASSWORD));
  } finally {
    secrets.stop();
  }
});

Deno.test("BgpSecrets: a Secret created later is picked up by the retry; an outage keeps passwords", async () => {
  const store = new SecretStore();
  const logs: Record<string, unknown>[] = [];
  let changes = 0;
  const changed = Promise.withResolvers<void>();
  const secrets = secretsFor(store, logs, () => {
    changes++;
    if (secrets.problems.length === 0) changed.resolve();
  });
  try {
    await secrets.use(ONE_PEER);
    assert.equal(secrets.passwords.size, 0);
    assert.equal(passwordCondition(secrets.referenced, secrets.problems)?.status, "False");
    store.set("bgp", { k: PASSWORD });
    const timeout = setTimeout(() => changed.reject(new Error("no change within 5 s")), 5_000);
    await changed.promise.finally(() => clearTimeout(timeout));
    assert.ok(changes >= 1);
    assert.deepEqual([...secrets.passwords], [["bgp/k", PASSWORD]]);
    assert.ok(logs.some((l) => l.msg === "BGP password available" && l.key === "k"));

    // The API server goes away: the session keeps its password, nothing is reported.
    store.down = true;
    await secrets.use(ONE_PEER);
    assert.deepEqual([...secrets.passwords], [["bgp/k", PASSWORD]]);
    assert.deepEqual(secrets.problems, []);
    // A rotated password replaces the old one.
    store.down = false;
    store.set("bgp", { k: "rotated" });
    await secrets.use(ONE_PEER);
    assert.deepEqual([...secrets.passwords], [["bgp/k", "rotated"]]);
    assert.ok(logs.some((l) => l.msg === "BGP password changed"));
    assert.ok(!JSON.stringify(logs).includes(PASSWORD));
    assert.ok(!JSON.stringify(logs).includes("rotated"));
  } finally {
    secrets.stop();
  }
});

Deno.test("passwordCondition: absent without references; names the Secret, key and peers", () => {
  assert.equal(passwordCondition(0, []), undefined);
  assert.deepEqual(passwordCondition(2, []), {
    type: "BGPPasswordsAvailable",
    status: "True",
    reason: "PasswordsAvailable",
    message: "every BGP password referenced by passwordSecretRef (2) was read",
  });
  assert.deepEqual(
    passwordCondition(1, [{
      secret: "kube-system/bgp",
      key: "k",
      peers: ["fd00:a::1"],
      reason: "the Secret does not exist",
      kept: false,
    }]),
    {
      type: "BGPPasswordsAvailable",
      status: "False",
      reason: "BGPPasswordUnavailable",
      message: 'secret kube-system/bgp key "k": the Secret does not exist; peer fd00:a::1 left ' +
        "out of BIRD's config",
    },
  );
});

Deno.test("BgpSecrets: without a namespace every reference is a problem saying so", async () => {
  const store = new SecretStore();
  const secrets = new BgpSecrets({
    namespace: undefined,
    readSecret: store.read,
    onChange: () => {},
    log: () => {},
    retryMs: 60_000,
  });
  try {
    await secrets.use(config);
    assert.equal(store.gets.length, 0);
    assert.equal(secrets.problems.length, 3);
    assert.match(secrets.problems[0].reason, /POD_NAMESPACE/);
  } finally {
    secrets.stop();
  }
});

Deno.test("BgpSecrets: a deleted Secret keeps the password last read, reported; a recreated one is used", async () => {
  const store = new SecretStore();
  const logs: Record<string, unknown>[] = [];
  const secrets = secretsFor(store, logs);
  try {
    store.set("bgp", { k: PASSWORD });
    await secrets.use(ONE_PEER);
    assert.deepEqual([...secrets.passwords], [["bgp/k", PASSWORD]]);

    // Deleted (a rotation by delete + create, or by mistake): the session keeps its password.
    store.secrets.delete("bgp");
    await secrets.use(ONE_PEER);
    assert.deepEqual([...secrets.passwords], [["bgp/k", PASSWORD]]);
    assert.deepEqual(secrets.problems.map((p) => [p.reason, p.kept]), [
      ["the Secret does not exist", true],
    ]);
    const cond = passwordCondition(secrets.referenced, secrets.problems)!;
    assert.equal(cond.status, "False");
    assert.equal(cond.reason, "LastPasswordKept");
    assert.match(cond.message, /peer fd00:a::1 keeps the password last read/);
    assert.ok(
      logs.some((l) => l.level === "warn" && /keep the password last read/.test(String(l.msg))),
      JSON.stringify(logs),
    );

    // Recreated with a new password: used, the problem clears.
    store.set("bgp", { k: "recreated" });
    await secrets.use(ONE_PEER);
    assert.deepEqual([...secrets.passwords], [["bgp/k", "recreated"]]);
    assert.equal(secrets.problems.length, 0);

    // A key removed from a Secret that exists is what the operator wrote: the peer is left out.
    store.set("bgp", { other: "x" });
    await secrets.use(ONE_PEER);
    assert.deepEqual([...secrets.passwords], []);
    assert.equal(secrets.problems[0].kept, false);
    assert.ok(!JSON.stringify(logs).includes(PASSWORD));
  } finally {
    secrets.stop();
  }
});

Deno.test("BgpSecrets: a Secret missing since the start leaves its peers out (nothing to keep)", async () => {
  const store = new SecretStore();
  const secrets = secretsFor(store, []);
  try {
    await secrets.use(config);
    assert.equal(secrets.passwords.size, 0);
    assert.ok(secrets.problems.every((p) => p.kept === false));
    assert.equal(
      passwordCondition(secrets.referenced, secrets.problems)?.reason,
      "BGPPasswordUnavailable",
    );
  } finally {
    secrets.stop();
  }
});

/** The GETs `store` serves within `ms`. */
async function getsWithin(store: SecretStore, ms: number): Promise<number> {
  const before = store.gets.length;
  await new Promise((r) => setTimeout(r, ms));
  return store.gets.length - before;
}

Deno.test("BgpSecrets: a deleted Secret is read again less and less often, up to the refresh period", async () => {
  const store = new SecretStore();
  const secrets = new BgpSecrets({
    namespace: "kube-system",
    readSecret: store.read,
    onChange: () => {},
    log: () => {},
    refreshMs: 320,
    retryMs: 10,
  });
  try {
    store.set("bgp", { k: PASSWORD });
    await secrets.use(ONE_PEER);
    store.secrets.delete("bgp");
    await secrets.use(ONE_PEER);
    // 10, 20, 40, 80, 160, then every 320 ms: at most 7 GETs in 700 ms, where a read every
    // retryMs would be 70.
    const gets = await getsWithin(store, 700);
    assert.ok(gets >= 4 && gets <= 7, `${gets} GETs of the deleted Secret in 700 ms`);
    assert.deepEqual([...secrets.passwords], [["bgp/k", PASSWORD]], "still kept");

    // Recreated: seen within the cap, and the back-off is over.
    store.set("bgp", { k: "recreated" });
    await getsWithin(store, 400);
    assert.deepEqual([...secrets.passwords], [["bgp/k", "recreated"]]);
    assert.equal(secrets.problems.length, 0);
    store.secrets.delete("bgp");
    await secrets.use(ONE_PEER);
    assert.ok(await getsWithin(store, 25) >= 1, "deleted again: the first retry is quick again");
  } finally {
    secrets.stop();
  }
});

Deno.test("BgpSecrets: peers left out (nothing kept) keep the short retry, no back-off", async () => {
  const store = new SecretStore();
  const secrets = secretsFor(store, []);
  try {
    await secrets.use(ONE_PEER);
    assert.equal(secrets.problems[0].kept, false);
    const gets = await getsWithin(store, 300);
    assert.ok(gets >= 10, `${gets} GETs in 300 ms at a 10 ms retry`);
  } finally {
    secrets.stop();
  }
});
