/**
 * `deno run --allow-net http_get.ts URL`: one GET, printed as a JSON line
 * `{status, contentType, body}`. Tests run it under `nsenter --net=…` to reach an HTTP endpoint
 * that listens inside a node namespace (the test process itself cannot enter it: Deno's network
 * I/O runs on other threads).
 *
 * @module
 */

if (import.meta.main) {
  const [url] = Deno.args;
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  console.log(JSON.stringify({
    status: res.status,
    contentType: res.headers.get("content-type"),
    body: await res.text(),
  }));
}
