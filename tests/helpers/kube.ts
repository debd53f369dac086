/**
 * A real Kubernetes control plane for tests: etcd and kube-apiserver 1.34 (built from the Go
 * module proxy by `scripts/build_kube.sh`) on 127.0.0.1, with real TLS (an openssl-made CA), a
 * real service-account issuer and signing key (so the TokenRequest API mints real tokens), RBAC
 * (`Node,RBAC`) and an admin kubeconfig.
 *
 * ```ts
 * await using kube = await KubeCluster.start();
 * await kube.apply(await Deno.readTextFile("deploy/rbac.yaml"));
 * const token = await kube.tokenFor("kube-system", "flock");
 * const kubeconfig = await kube.kubeconfigFor(token);      // a file path
 * const r = await kube.kubectl(["get", "pods", "-A"], { kubeconfig });
 * ```
 *
 * Networking: both processes listen on 127.0.0.1 of the host namespace only (random free ports).
 * A flock agent under test reaches them by running in the host namespace too, with only its
 * netlink handle in the node namespace: `flock agent --netns /var/run/netns/NODE --kubeconfig F`.
 * The CNI plugin talks to the agent over a unix socket, which no network namespace hides.
 *
 * No kube-controller-manager runs, so nothing creates the `default` ServiceAccount of a namespace;
 * the ServiceAccount admission plugin is therefore off (as in controller-runtime's envtest), so
 * tests can create pods without one. No scheduler or kubelet runs either: pods stay Pending, with
 * whatever `spec.nodeName` the test gives them.
 *
 * @module
 */

import { join } from "node:path";
import { type ExecOptions, type ExecResult, run } from "./exec.ts";
import { etcdPath, kubeApiserverPath, kubectlPath, REPO_ROOT } from "./tools.ts";
import { ADMIN_USER, type KubePki, makeKubePki, renderKubeconfig } from "./kube_pki.ts";

export { ADMIN_USER };

/** Options of {@linkcode KubeCluster.start}. */
export interface KubeClusterOptions {
  /** `--authorization-mode`; default `Node,RBAC`. */
  authorizationMode?: string;
  /** Keep the ServiceAccount admission plugin on (pods then need an existing ServiceAccount). */
  serviceAccountAdmission?: boolean;
  /** Extra kube-apiserver flags (`--name=value`), appended last so they win. */
  extraApiserverArgs?: string[];
  /** How long to wait for etcd and the API server to become ready; default 120 s. */
  readyTimeoutMs?: number;
}

/** Options of {@linkcode KubeCluster.kubectl}. */
export interface KubectlOptions extends Omit<ExecOptions, "env"> {
  /** Kubeconfig to use instead of the admin one (e.g. from {@linkcode KubeCluster.kubeconfigFor}). */
  kubeconfig?: string;
}

/** Daemons still running; `unload` (which cannot await) kills whatever a test left behind. */
const liveDaemons = new Set<Deno.ChildProcess>();
globalThis.addEventListener("unload", () => {
  for (const child of liveDaemons) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  liveDaemons.clear();
});

/** A background process whose stdout and stderr go to a log file. */
class Daemon {
  readonly #child: Deno.ChildProcess;
  readonly exited: Promise<Deno.CommandStatus>;
  #done = false;

  private constructor(readonly name: string, readonly logPath: string, child: Deno.ChildProcess) {
    this.#child = child;
    liveDaemons.add(child);
    this.exited = child.status.then((s) => {
      this.#done = true;
      liveDaemons.delete(child);
      return s;
    });
  }

  static async spawn(name: string, program: string, args: string[], logPath: string) {
    const log = await Deno.open(logPath, { append: true, create: true });
    try {
      const child = new Deno.Command(program, {
        args,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // Both streams into one file: a shared writer keeps their lines from tearing each other.
      const sink = log.writable.getWriter();
      const pump = async (stream: ReadableStream<Uint8Array>) => {
        for await (const chunk of stream) await sink.write(chunk).catch(() => {});
      };
      Promise.all([pump(child.stdout), pump(child.stderr)])
        .finally(() => sink.close().catch(() => {}));
      return new Daemon(name, logPath, child);
    } catch (err) {
      log.close();
      throw err;
    }
  }

  get running(): boolean {
    return !this.#done;
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.#done) return;
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* already gone */ }
    }, graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last `lines` lines of its log, for error messages. */
  async tail(lines = 40): Promise<string> {
    try {
      return (await Deno.readTextFile(this.logPath)).trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Polls `probe` until it returns true, the daemon dies, or `timeoutMs` passes. */
async function waitUntil(
  daemon: Daemon,
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let died = false;
  daemon.exited.then(() => died = true);
  while (Date.now() < deadline) {
    if (died) break;
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const why = died ? "exited" : `not ready after ${timeoutMs} ms`;
  throw new Error(`${what} ${why}; last log lines:\n${await daemon.tail()}`);
}

/** A random token for the static admin token file. */
function randomToken(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(24)), (b) => b.toString(16)).join("");
}

/** etcd + kube-apiserver on loopback; stop it with `stop()` or `await using`. */
export class KubeCluster implements AsyncDisposable {
  #etcd?: Daemon;
  #apiserver?: Daemon;
  #http?: Deno.HttpClient;
  #kubeconfigs = 0;
  #stopped = false;

  private constructor(
    /** Temporary directory: PKI, etcd data, logs, kubeconfigs. */
    readonly dir: string,
    readonly pki: KubePki,
    /** The CA certificate (PEM) that signed the serving certificate. */
    readonly caPem: string,
    /** A static bearer token of the admin user (group `system:masters`), for fetch clients. */
    readonly adminToken: string,
    readonly etcdPort: number,
    readonly apiserverPort: number,
    readonly options: KubeClusterOptions,
  ) {}

  /** `https://127.0.0.1:<port>`. */
  get server(): string {
    return `https://127.0.0.1:${this.apiserverPort}`;
  }
  /** The admin kubeconfig (client certificate in `system:masters`). */
  get adminKubeconfig(): string {
    return join(this.dir, "admin.kubeconfig");
  }
  get etcdLogPath(): string {
    return join(this.dir, "etcd.log");
  }
  get apiserverLogPath(): string {
    return join(this.dir, "kube-apiserver.log");
  }

  /** Makes the PKI, starts etcd and kube-apiserver, and waits until `/readyz` says ok. */
  static async start(options: KubeClusterOptions = {}): Promise<KubeCluster> {
    // Fail with MissingToolError before making anything.
    kubeApiserverPath();
    etcdPath();
    kubectlPath();
    // A port found free can be taken by someone else before the daemon binds it: try again on
    // fresh ports then.
    for (let attempt = 1;; attempt++) {
      try {
        return await KubeCluster.#startOnce(options);
      } catch (err) {
        if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
      }
    }
  }

  static async #startOnce(options: KubeClusterOptions): Promise<KubeCluster> {
    const dir = await Deno.makeTempDir({ prefix: "flk-kube-" });
    let cluster: KubeCluster | undefined;
    try {
      const pki = await makeKubePki(dir);
      const caPem = await Deno.readTextFile(pki.caCert);
      const adminToken = randomToken();
      await Deno.writeTextFile(
        join(dir, "tokens.csv"),
        `${adminToken},${ADMIN_USER}-token,${ADMIN_USER}-token,"system:masters"\n`,
      );
      cluster = new KubeCluster(dir, pki, caPem, adminToken, freePort(), freePort(), options);
      await Deno.writeTextFile(
        cluster.adminKubeconfig,
        renderKubeconfig(cluster.server, caPem, {
          certPem: await Deno.readTextFile(pki.adminCert),
          keyPem: await Deno.readTextFile(pki.adminKey),
        }),
      );
      await cluster.#startEtcd();
      await cluster.startApiserver();
      return cluster;
    } catch (err) {
      if (cluster) await cluster.stop();
      else await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
  }

  get #readyTimeoutMs(): number {
    return this.options.readyTimeoutMs ?? 120_000;
  }

  async #startEtcd(): Promise<void> {
    const client = `http://127.0.0.1:${this.etcdPort}`;
    const peer = `http://127.0.0.1:${freePort()}`;
    this.#etcd = await Daemon.spawn("etcd", etcdPath(), [
      "--name=flock-test",
      `--data-dir=${join(this.dir, "etcd")}`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=flock-test=${peer}`,
      // A throw-away store: durability costs fsyncs and buys nothing here.
      "--unsafe-no-fsync",
      "--log-level=warn",
    ], this.etcdLogPath);
    await waitUntil(this.#etcd, "etcd", async () => {
      const res = await fetch(`${client}/health`);
      const body = await res.json();
      return res.ok && body.health === "true";
    }, this.#readyTimeoutMs);
  }

  /** The kube-apiserver command line. */
  #apiserverArgs(): string[] {
    const p = this.pki;
    const admission = this.options.serviceAccountAdmission
      ? []
      : ["--disable-admission-plugins=ServiceAccount"];
    return [
      `--etcd-servers=http://127.0.0.1:${this.etcdPort}`,
      "--bind-address=127.0.0.1",
      `--secure-port=${this.apiserverPort}`,
      // No endpoint reconciler: it would refuse a loopback address for the `kubernetes` Service,
      // and nothing here routes to Services anyway.
      "--advertise-address=127.0.0.1",
      "--endpoint-reconciler-type=none",
      `--cert-dir=${join(this.dir, "apiserver-certs")}`,
      `--tls-cert-file=${p.servingCert}`,
      `--tls-private-key-file=${p.servingKey}`,
      `--client-ca-file=${p.caCert}`,
      `--token-auth-file=${join(this.dir, "tokens.csv")}`,
      `--authorization-mode=${this.options.authorizationMode ?? "Node,RBAC"}`,
      "--allow-privileged=true",
      "--service-cluster-ip-range=10.96.0.0/16",
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      `--service-account-key-file=${p.saPub}`,
      `--service-account-signing-key-file=${p.saKey}`,
      ...admission,
      "--profiling=false",
      "--v=1",
      ...(this.options.extraApiserverArgs ?? []),
    ];
  }

  /** An HTTP client that trusts the cluster CA. */
  get #httpClient(): Deno.HttpClient {
    this.#http ??= Deno.createHttpClient({ caCerts: [this.caPem] });
    return this.#http;
  }

  /**
   * GETs `path` on the API server as the admin (static token) and returns the response; for
   * tests that want the raw API.
   */
  fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (!headers.has("authorization")) headers.set("authorization", `Bearer ${this.adminToken}`);
    return fetch(`${this.server}${path}`, { ...init, headers, client: this.#httpClient });
  }

  /** Starts kube-apiserver (again, on the same port and etcd) and waits until it is ready. */
  async startApiserver(): Promise<void> {
    if (this.#apiserver?.running) throw new Error("kube-apiserver is already running");
    this.#apiserver = await Daemon.spawn(
      "kube-apiserver",
      kubeApiserverPath(),
      this.#apiserverArgs(),
      this.apiserverLogPath,
    );
    await waitUntil(this.#apiserver, "kube-apiserver", async () => {
      const res = await this.fetch("/readyz");
      const text = await res.text();
      return res.ok && text.trim() === "ok";
    }, this.#readyTimeoutMs);
  }

  /** Stops kube-apiserver (SIGTERM, as a rolling control-plane upgrade would); etcd stays. */
  async stopApiserver(): Promise<void> {
    await this.#apiserver?.stop();
  }

  /** Stops and starts kube-apiserver; every stored object survives (they live in etcd). */
  async restartApiserver(): Promise<void> {
    await this.stopApiserver();
    await this.startApiserver();
  }

  /** Runs kubectl against this cluster (admin unless `opts.kubeconfig`); never throws. */
  kubectl(args: string[], opts: KubectlOptions = {}): Promise<ExecResult> {
    const { kubeconfig, ...execOpts } = opts;
    return run([kubectlPath(), `--kubeconfig=${kubeconfig ?? this.adminKubeconfig}`, ...args], {
      timeoutMs: 60_000,
      ...execOpts,
      // kubectl must not pick up a developer's own cluster or cache dir.
      env: { KUBECONFIG: "", HOME: this.dir },
    });
  }

  /** Like {@linkcode kubectl}, but throws unless kubectl exits 0; returns stdout. */
  async kubectlOk(args: string[], opts: KubectlOptions = {}): Promise<string> {
    const r = await this.kubectl(args, opts);
    if (!r.success) {
      throw new Error(
        `kubectl ${args.join(" ")} failed (exit ${r.code}):\n${r.stderr.trim() || r.stdout.trim()}`,
      );
    }
    return r.stdout;
  }

  /**
   * `kubectl apply` of YAML/JSON text, one object, or a list of objects, as the admin (or as
   * `opts.kubeconfig`). Returns kubectl's output.
   */
  apply(
    manifest: string | Record<string, unknown> | Record<string, unknown>[],
    opts: KubectlOptions = {},
  ): Promise<string> {
    const text = typeof manifest === "string" ? manifest : JSON.stringify(
      Array.isArray(manifest) ? { apiVersion: "v1", kind: "List", items: manifest } : manifest,
    );
    return this.kubectlOk(["apply", "-f", "-"], { ...opts, stdin: text });
  }

  /** Waits until the named CustomResourceDefinition is Established (its API is served). */
  async waitForCrd(name: string, timeoutSeconds = 60): Promise<void> {
    await this.kubectlOk(
      ["wait", "--for=condition=Established", `--timeout=${timeoutSeconds}s`, `crd/${name}`],
      { timeoutMs: (timeoutSeconds + 10) * 1000 },
    );
  }

  /**
   * A token for ServiceAccount `namespace/name`, minted through the TokenRequest API (the
   * ServiceAccount must exist). It authenticates as `system:serviceaccount:<ns>:<name>`.
   */
  async tokenFor(namespace: string, name: string, durationSeconds = 3600): Promise<string> {
    const out = await this.kubectlOk([
      "create",
      "token",
      name,
      `--namespace=${namespace}`,
      `--duration=${durationSeconds}s`,
    ]);
    return out.trim();
  }

  /** Writes a kubeconfig that authenticates with `token`; returns its path. */
  async kubeconfigFor(token: string): Promise<string> {
    const path = join(this.dir, `user-${++this.#kubeconfigs}.kubeconfig`);
    await Deno.writeTextFile(path, renderKubeconfig(this.server, this.caPem, { token }), {
      mode: 0o600,
    });
    return path;
  }

  /** Kills kube-apiserver and etcd and removes the temporary directory; safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    // Throw-away data: no need to wait for a graceful shutdown.
    await this.#apiserver?.stop(2_000).catch(() => {});
    await this.#etcd?.stop(2_000).catch(() => {});
    this.#http?.close();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** An API server with deploy/'s NodeConfig CRD (established) and RBAC applied. */
export async function startKubeWithFlock(options: KubeClusterOptions = {}): Promise<KubeCluster> {
  const kube = await KubeCluster.start(options);
  try {
    await kube.apply(await Deno.readTextFile(join(REPO_ROOT, "deploy/crd.yaml")));
    await kube.apply(await Deno.readTextFile(join(REPO_ROOT, "deploy/rbac.yaml")));
    await kube.waitForCrd("nodeconfigs.flock.fritzlab.net");
    return kube;
  } catch (e) {
    await kube.stop();
    throw e;
  }
}
