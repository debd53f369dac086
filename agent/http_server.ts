/**
 * The agent's HTTP endpoint for probes and Prometheus: `/healthz`, `/readyz`, `/metrics`.
 * It listens on loopback by default ({@link DEFAULT_HTTP_ADDRESS}); the DaemonSet runs with
 * the host network, so the kubelet's probes reach it there.
 *
 * - `/healthz`: 200 while the process and its event loop answer (this handler running is the
 *   proof; a blocked loop times the probe out) and nothing only a restart repairs is wrong (the
 *   agent's socket was deleted); else 503 with the reason, and the kubelet restarts the agent.
 * - `/readyz`: 200 once the node config is in hand and the store is reconciled, and while a CNI
 *   call would get through (the socket and the store are still the agent's, the last store write
 *   did not fail: agent/health.ts); else 503 with the reason as the body. Cheap: no fsync.
 * - `/metrics`: the text format 0.0.4.
 *
 * @module
 */

import { PROMETHEUS_CONTENT_TYPE } from "./metrics.ts";
import type { LogFn } from "./logger.ts";

/** Default listen address: loopback only, flock's port. */
export const DEFAULT_HTTP_ADDRESS = "127.0.0.1:9603";

/** What the endpoint asks the agent. */
export interface HttpEndpointSource {
  /** Undefined when ready, else why not. */
  notReadyReason(): string | undefined;
  /** Undefined while the process is fine, else why it must be restarted (absent: always fine). */
  notLiveReason?(): string | undefined;
  /** The metrics text. */
  metrics(): Promise<string>;
}

/** A host and port to listen on. */
export interface ListenAddress {
  hostname: string;
  port: number;
}

/**
 * Parses `HOST:PORT`, `[V6]:PORT` or `:PORT` (all interfaces, IPv6 and IPv4: `::`, which Linux
 * binds for both families). Port 0 picks a free one.
 *
 * @throws {Error} with a message naming the bad part
 */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.%\w]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) throw new Error(`expected HOST:PORT or [IPV6]:PORT, got ${JSON.stringify(text)}`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`port ${port} is out of range`);
  const hostname = m[1] ?? (m[2] || ALL_INTERFACES);
  return { hostname, port };
}

const TEXT = { "content-type": "text/plain; charset=utf-8" };

/** `:PORT`'s host: IPv6's any address, which takes IPv4 connections too (`bindv6only` is 0). */
const ALL_INTERFACES = "::";

/** Answers one request; exported so tests and other transports can reuse the routing. */
export async function handleHttp(req: Request, source: HttpEndpointSource): Promise<Response> {
  const path = new URL(req.url).pathname;
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("method not allowed\n", {
      status: 405,
      headers: { ...TEXT, allow: "GET, HEAD" },
    });
  }
  switch (path) {
    case "/healthz": {
      const reason = source.notLiveReason?.();
      return reason === undefined
        ? new Response("ok\n", { headers: TEXT })
        : new Response(`not live: ${reason}\n`, { status: 503, headers: TEXT });
    }
    case "/readyz": {
      const reason = source.notReadyReason();
      return reason === undefined
        ? new Response("ready\n", { headers: TEXT })
        : new Response(`not ready: ${reason}\n`, { status: 503, headers: TEXT });
    }
    case "/metrics":
      return new Response(await source.metrics(), {
        headers: { "content-type": PROMETHEUS_CONTENT_TYPE },
      });
    default:
      return new Response("not found: try /healthz, /readyz or /metrics\n", {
        status: 404,
        headers: TEXT,
      });
  }
}

/** A running endpoint. */
export interface HttpEndpoint extends AsyncDisposable {
  /** The address it actually listens on (the port chosen when 0 was asked). */
  readonly address: ListenAddress;
  close(): Promise<void>;
}

/** Starts the endpoint; resolves once it listens. */
export async function startHttpEndpoint(
  address: ListenAddress,
  source: HttpEndpointSource,
  log?: LogFn,
): Promise<HttpEndpoint> {
  try {
    return await serveOn(address, source, log);
  } catch (e) {
    // A node with IPv6 turned off cannot bind `::`: all interfaces are then IPv4's.
    if (address.hostname !== ALL_INTERFACES) throw e;
    return await serveOn({ ...address, hostname: "0.0.0.0" }, source, log);
  }
}

async function serveOn(
  address: ListenAddress,
  source: HttpEndpointSource,
  log?: LogFn,
): Promise<HttpEndpoint> {
  const { promise: listening, resolve } = Promise.withResolvers<ListenAddress>();
  const server = Deno.serve({
    hostname: address.hostname,
    port: address.port,
    onListen: (a) => resolve({ hostname: a.hostname, port: a.port }),
    onError: (e) => {
      log?.({ level: "error", msg: "http handler failed", error: String(e) });
      return new Response("internal error\n", { status: 500, headers: TEXT });
    },
  }, (req) => handleHttp(req, source));
  // Deno.serve throws synchronously for a bad address and rejects `finished` for late errors.
  const bound = await Promise.race([
    listening,
    server.finished.then(() => {
      throw new Error(`http endpoint on ${address.hostname}:${address.port} stopped at start`);
    }),
  ]);
  const close = async () => {
    await server.shutdown();
  };
  return { address: bound, close, [Symbol.asyncDispose]: close };
}
