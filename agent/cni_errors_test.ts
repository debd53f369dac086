import assert from "node:assert/strict";
import {
  DumpIncompleteError,
  DumpInterruptedError,
  NetlinkArgumentError,
  NetlinkError,
  NetlinkSocketError,
  NetnsError,
} from "../netlink/errors.ts";
import { EINVAL, ENOBUFS, EPERM } from "../netlink/ffi.ts";
import { toCniError } from "./cni_errors.ts";
import { DatapathInputError, InterfaceConflictError } from "./datapath.ts";
import { CniCode, CniError, type RpcRequest, type RpcResponse } from "./protocol.ts";
import { RpcServer } from "./rpc_server.ts";
import { callAgent } from "../cni.ts";

/** EOPNOTSUPP: a kernel without the feature; asking again never helps. */
const EOPNOTSUPP = 95;

Deno.test("toCniError: a CniError keeps its code, message and details", () => {
  const e = new CniError(CniCode.unknownContainer, "no such container", "c1");
  assert.equal(toCniError(e), e);
});

Deno.test("toCniError: each known failure gets the code a runtime acts on", () => {
  const cases: [unknown, number, RegExp][] = [
    [new NetnsError("/run/netns/x", "does not exist"), CniCode.invalidNetns, /\/run\/netns\/x/],
    [new DatapathInputError("bad ifname"), CniCode.invalidEnvironment, /^bad ifname$/],
    [new NetlinkArgumentError("bad prefix"), CniCode.invalidEnvironment, /^bad prefix$/],
    [new InterfaceConflictError("eth0 is taken"), CniCode.invalidConfig, /^eth0 is taken$/],
    [new DumpInterruptedError("list links", "RTM_GETLINK", 6), CniCode.tryAgainLater, /again/],
    [new DumpIncompleteError("list routes", ENOBUFS), CniCode.tryAgainLater, /list routes/],
    [new NetlinkSocketError("list links", ENOBUFS), CniCode.tryAgainLater, /list links/],
    [new NetlinkError("add route", 17), CniCode.internal, /^NetlinkError: add route: /],
    [new TypeError("boom"), CniCode.internal, /^TypeError: boom$/],
    ["a string", CniCode.internal, /^Error: a string$/],
    [undefined, CniCode.internal, /^Error: undefined$/],
  ];
  for (const [error, code, msg] of cases) {
    const cni = toCniError(error);
    assert.equal(cni.code, code, String(error));
    assert.match(cni.message, msg);
  }
});

Deno.test("toCniError: a dump the kernel stopped with a lasting errno is 999, not 'try again'", () => {
  // The runtime retries code 11 for ever: a bad filter or a missing kernel feature never heals.
  for (const errno of [EINVAL, EOPNOTSUPP, EPERM]) {
    const cni = toCniError(new DumpIncompleteError("list routes", errno, "bad filter"));
    assert.equal(cni.code, CniCode.internal, `errno ${errno}`);
    assert.match(
      cni.message,
      new RegExp(
        `^DumpIncompleteError: list routes: the kernel stopped the dump part-way: .*` +
          `\\(errno ${errno}\\).*bad filter`,
      ),
    );
  }
});

Deno.test("RpcServer: a handler's failure gets the agent's mapping (one mapping, not two)", async () => {
  const handler = (req: RpcRequest): Promise<RpcResponse> => {
    if (req.containerId === "busy") throw new DumpInterruptedError("list links", "RTM_GETLINK", 6);
    return Promise.reject(new NetnsError(req.netns, "does not exist"));
  };
  const dir = await Deno.makeTempDir({ prefix: "flock-cnierr-" });
  const server = new RpcServer({ path: `${dir}/flock.sock`, handler });
  await server.start();
  try {
    const ask = (containerId: string) =>
      callAgent(`${dir}/flock.sock`, {
        command: "ADD",
        containerId,
        netns: "/run/netns/gone",
        ifname: "eth0",
        args: "",
        config: { cniVersion: "1.0.0", name: "flock" },
      }, 10_000);
    const busy = await ask("busy");
    assert.equal(busy.ok ? 0 : busy.error.code, CniCode.tryAgainLater);
    const netns = await ask("netns");
    assert.equal(netns.ok ? 0 : netns.error.code, CniCode.invalidNetns);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
