import assert from "node:assert/strict";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import {
  argvUrl,
  basicAuth,
  engineEnv,
  envCredentials,
  findV2Server,
  isV1Placeholder,
  listeningUrls,
  serviceFiles,
  serviceOfThisProcess,
  startBridge,
} from "../lib/server.js";
import { tempDir } from "./helpers.js";

test("the V1 placeholder URL (a TUI that does not listen) is told from a real one", () => {
  assert.equal(isV1Placeholder(new URL("http://localhost:4096")), true);
  assert.equal(isV1Placeholder("http://localhost:4096/"), true);
  assert.equal(isV1Placeholder(new URL("http://127.0.0.1:4096")), false);
  assert.equal(isV1Placeholder("http://127.0.0.1:18311/"), false);
});

test("credentials reach the engine through its environment only", () => {
  assert.deepEqual(envCredentials({ OPENCODE_SERVER_PASSWORD: "pw" }), { username: "opencode", password: "pw" });
  assert.deepEqual(envCredentials({}), { username: "opencode", password: undefined });
  const base = { PATH: "/bin", OPENCODE_SERVER_PASSWORD: "old", OPENCODE_SERVER_USERNAME: "old" };
  assert.deepEqual(engineEnv(base, { username: "u", password: "new" }), {
    PATH: "/bin",
    OPENCODE_SERVER_PASSWORD: "new",
    OPENCODE_SERVER_USERNAME: "u",
  });
  assert.deepEqual(engineEnv(base, { url: "x" }), { PATH: "/bin" });
  assert.equal(base.OPENCODE_SERVER_PASSWORD, "old", "the plugin's own environment is not changed");
  assert.equal(basicAuth({ username: "opencode", password: "pw" }), `Basic ${Buffer.from("opencode:pw").toString("base64")}`);
  assert.equal(basicAuth({}), undefined);
});

test("the V2 service state file that names this process gives the URL and password", (t) => {
  const state = tempDir(t);
  mkdirSync(path.join(state, "opencode"));
  const env = { XDG_STATE_HOME: state };
  assert.deepEqual(serviceFiles({ env, channel: "latest" }), [path.join(state, "opencode", "service.json")]);
  assert.deepEqual(serviceFiles({ env, channel: "beta" })[0], path.join(state, "opencode", "service-beta.json"));
  const file = path.join(state, "opencode", "service.json");
  writeFileSync(file, JSON.stringify({ url: "http://127.0.0.1:49374/", pid: 111, password: "gen" }));
  assert.equal(serviceOfThisProcess({ env, pid: 222 }), undefined, "another process's service is not ours");
  assert.deepEqual(serviceOfThisProcess({ env, pid: 111 }), { url: "http://127.0.0.1:49374", username: "opencode", password: "gen" });
  assert.deepEqual(serviceFiles({ env: { HOME: "/home/u" } }), ["/home/u/.local/state/opencode/service.json"]);
});

test("a fixed --port on the command line is a candidate URL", () => {
  assert.equal(argvUrl(["bun", "x", "serve", "--hostname", "127.0.0.1", "--port", "18312"]), "http://127.0.0.1:18312");
  assert.equal(argvUrl(["serve", "--port=4096"]), "http://127.0.0.1:4096");
  assert.equal(argvUrl(["serve", "--hostname", "0.0.0.0", "--port", "80"]), "http://127.0.0.1:80");
  assert.equal(argvUrl(["serve", "--port", "0"]), undefined);
  assert.equal(argvUrl(["serve", "--service"]), undefined);
});

test("listening sockets of this process are read from /proc", (t) => {
  const proc = tempDir(t);
  mkdirSync(path.join(proc, "fd"));
  mkdirSync(path.join(proc, "net"));
  symlinkSync("socket:[5001]", path.join(proc, "fd", "7"));
  symlinkSync("socket:[5002]", path.join(proc, "fd", "8"));
  symlinkSync("/dev/null", path.join(proc, "fd", "0"));
  const head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
  writeFileSync(
    path.join(proc, "net", "tcp"),
    [
      head,
      // 127.0.0.1:18312 LISTEN, ours
      "   0: 0100007F:4788 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5001 1 0",
      // 0.0.0.0:8080 LISTEN, not ours
      "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0",
      // an established connection of ours
      "   2: 0100007F:4788 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5002 1 0",
    ].join("\n"),
  );
  writeFileSync(
    path.join(proc, "net", "tcp6"),
    `${head}\n   0: 00000000000000000000000000000000:0FA0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5002 1 0\n`,
  );
  assert.deepEqual(listeningUrls({ procRoot: proc }), ["http://127.0.0.1:18312", "http://[::1]:4000"]);
  assert.deepEqual(listeningUrls({ procRoot: path.join(proc, "missing") }), []);
});

test("findV2Server accepts only a server whose /api/info names this process", async (t) => {
  const env = { XDG_STATE_HOME: tempDir(t), OPENCODE_SERVER_PASSWORD: "pw" };
  const asked = [];
  const fetchFn = async (url, init) => {
    asked.push({ url, auth: init.headers.authorization });
    const pid = url.startsWith("http://127.0.0.1:7001") ? 42 : 7;
    return new Response(JSON.stringify({ version: "2.1.2", pid }), { headers: { "content-type": "application/json" } });
  };
  const found = await findV2Server({ env, pid: 42, argv: ["serve", "--port", "7000"], fetchFn, procRoot: "/nonexistent" });
  assert.match(found.error, /cannot tell the URL/);
  const ok = await findV2Server({ env, pid: 42, argv: ["serve", "--port", "7001"], fetchFn, procRoot: "/nonexistent" });
  assert.deepEqual(ok, { url: "http://127.0.0.1:7001", username: "opencode", password: "pw" });
  assert.equal(asked.at(-1).auth, basicAuth({ username: "opencode", password: "pw" }));
});

test("the V1 bridge asks for its own password and forwards with the server's", async () => {
  let handler;
  const serve = (options) => {
    handler = options;
    return { port: 40123, stop() {} };
  };
  const forwarded = [];
  const bridge = startBridge({
    serve,
    target: "http://localhost:4096",
    serverCreds: { username: "opencode", password: "server-pw" },
    forward: async (request) => {
      forwarded.push({ url: request.url, auth: request.headers.get("authorization"), body: await request.text() });
      return new Response("ok");
    },
  });
  assert.equal(bridge.url, "http://127.0.0.1:40123");
  assert.equal(handler.hostname, "127.0.0.1");
  assert.ok(bridge.password.length >= 24);
  const denied = await handler.fetch(new Request("http://127.0.0.1:40123/session"));
  assert.equal(denied.status, 401);
  const wrong = await handler.fetch(new Request("http://127.0.0.1:40123/session", { headers: { authorization: basicAuth({ password: "nope" }) } }));
  assert.equal(wrong.status, 401);
  assert.equal(forwarded.length, 0);
  const auth = basicAuth(bridge);
  const res = await handler.fetch(
    new Request("http://127.0.0.1:40123/session?directory=%2Fp", { method: "POST", headers: { authorization: auth }, body: '{"title":"x"}' }),
  );
  assert.equal(await res.text(), "ok");
  assert.deepEqual(forwarded[0], {
    url: "http://localhost:4096/session?directory=%2Fp",
    auth: basicAuth({ username: "opencode", password: "server-pw" }),
    body: '{"title":"x"}',
  });
  const token = Buffer.from(`opencode:${bridge.password}`).toString("base64");
  await handler.fetch(new Request(`http://127.0.0.1:40123/event?auth_token=${token}`));
  assert.equal(forwarded[1].url, "http://localhost:4096/event");
  assert.throws(() => startBridge({ serve: undefined, forward: () => {} }), /no Bun.serve/);
});
