/**
 * The PKI and kubeconfigs of a test Kubernetes API server, made with Debian's `openssl`: a CA, a
 * serving certificate for 127.0.0.1/localhost (plus the in-cluster names), an admin client
 * certificate in `system:masters`, and the service-account signing key pair. ECDSA P-256
 * throughout: every key is made in milliseconds, and the API server accepts ES256 for
 * service-account tokens.
 *
 * @module
 */

import { join } from "node:path";
import { runOk } from "./exec.ts";

/** The files {@linkcode makeKubePki} writes, as absolute paths. */
export interface KubePki {
  caCert: string;
  caKey: string;
  servingCert: string;
  servingKey: string;
  adminCert: string;
  adminKey: string;
  /** Service-account token signing key (private) and its public half (verification). */
  saKey: string;
  saPub: string;
}

/** The admin client certificate's user; `system:masters` is its group. */
export const ADMIN_USER = "flock-test-admin";

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** A random serial, so two clusters' certificates never share one. */
function serial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f; // keep it positive
  return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Issues `name`.crt/.key signed by the CA with the given subject and X.509 extensions. */
async function issue(dir: string, name: string, subject: string, extensions: string) {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  await runOk(["openssl", "req", ...EC_KEY, "-keyout", key, "-out", csr, "-subj", subject]);
  await Deno.writeTextFile(ext, extensions);
  await runOk([
    "openssl",
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    join(dir, "ca.crt"),
    "-CAkey",
    join(dir, "ca.key"),
    "-set_serial",
    serial(),
    "-days",
    "2",
    "-extfile",
    ext,
    "-out",
    join(dir, `${name}.crt`),
  ]);
  await Deno.remove(csr);
  await Deno.remove(ext);
}

/** Writes a fresh PKI into `dir` (which must exist). */
export async function makeKubePki(dir: string): Promise<KubePki> {
  const at = (f: string) => join(dir, f);
  await runOk([
    "openssl",
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    at("ca.key"),
    "-out",
    at("ca.crt"),
    "-days",
    "2",
    "-subj",
    "/CN=flock-test-ca",
  ]);
  const sans = [
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
    "IP:10.96.0.1",
  ];
  await issue(
    dir,
    "apiserver",
    "/CN=kube-apiserver",
    `subjectAltName=${sans.join(",")}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n`,
  );
  await issue(
    dir,
    "admin",
    `/O=system:masters/CN=${ADMIN_USER}`,
    "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
  );
  await runOk([
    "openssl",
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-out",
    at("sa.key"),
  ]);
  await runOk(["openssl", "pkey", "-in", at("sa.key"), "-pubout", "-out", at("sa.pub")]);
  return {
    caCert: at("ca.crt"),
    caKey: at("ca.key"),
    servingCert: at("apiserver.crt"),
    servingKey: at("apiserver.key"),
    adminCert: at("admin.crt"),
    adminKey: at("admin.key"),
    saKey: at("sa.key"),
    saPub: at("sa.pub"),
  };
}

/** How a kubeconfig's user authenticates: a bearer token or a client certificate (PEM text). */
export type KubeCredentials = { token: string } | { certPem: string; keyPem: string };

const base64 = (text: string) => btoa(text);

/**
 * A kubeconfig (JSON, which every kubeconfig reader accepts) for `server` with the CA embedded,
 * so the file stands alone.
 */
export function renderKubeconfig(server: string, caPem: string, creds: KubeCredentials): string {
  const user = "token" in creds ? { token: creds.token } : {
    "client-certificate-data": base64(creds.certPem),
    "client-key-data": base64(creds.keyPem),
  };
  return JSON.stringify(
    {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{
        name: "flock-test",
        cluster: { server, "certificate-authority-data": base64(caPem) },
      }],
      users: [{ name: "flock-test-user", user }],
      contexts: [{
        name: "flock-test",
        context: { cluster: "flock-test", user: "flock-test-user" },
      }],
      "current-context": "flock-test",
    },
    null,
    2,
  ) + "\n";
}
