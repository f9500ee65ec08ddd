// Which URL and credentials reach the OpenCode server this plugin runs in, so that the engine
// (a separate process) attaches to the same server the TUI uses.
//
// Checked against 1.18.33 and 2.1.2:
// - V1: `server(input)` gets `input.serverUrl`. `opencode serve` and `opencode --port N`
//   listen there; the plain TUI (`opencode`) runs its server in a worker that does not listen,
//   and `serverUrl` is then the placeholder `http://localhost:4096/`. The password is the
//   process's `OPENCODE_SERVER_PASSWORD` (user `OPENCODE_SERVER_USERNAME`, default `opencode`).
// - V2: `setup(ctx)` gets no URL. The TUI starts (or reuses) the background service, whose URL,
//   pid and generated password are in `$XDG_STATE_HOME/opencode/service.json`; a plain
//   `opencode serve` has `OPENCODE_SERVER_PASSWORD` in its environment. `GET /api/info` names
//   the server's pid, which tells our own server from another one.

import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const V1_PLACEHOLDER = "http://localhost:4096/";

/** Basic-auth header value, or `undefined` without a password. */
export function basicAuth({ username, password }) {
  if (!password) return undefined;
  return `Basic ${Buffer.from(`${username ?? "opencode"}:${password}`).toString("base64")}`;
}

/** The credentials in this process's environment. */
export function envCredentials(env = process.env) {
  return { username: env.OPENCODE_SERVER_USERNAME || "opencode", password: env.OPENCODE_SERVER_PASSWORD || undefined };
}

/** The environment for the engine: ours, with the server's credentials (or none). */
export function engineEnv(base, creds) {
  const env = { ...base };
  delete env.OPENCODE_SERVER_PASSWORD;
  delete env.OPENCODE_SERVER_USERNAME;
  if (creds?.password) {
    env.OPENCODE_SERVER_PASSWORD = creds.password;
    env.OPENCODE_SERVER_USERNAME = creds.username ?? "opencode";
  }
  return env;
}

/** Whether a V1 `serverUrl` is the placeholder of a TUI whose server does not listen. */
export function isV1Placeholder(serverUrl) {
  return String(serverUrl) === V1_PLACEHOLDER;
}

/**
 * A loopback HTTP server (Bun) that forwards every request to `forward(request)` — the V1
 * client's in-process fetch — so that the engine reaches a TUI server that does not listen.
 * It asks for its own random password. Returns `{url, username, password, stop}`.
 */
export function startBridge({ forward, target, serverCreds, serve = globalThis.Bun?.serve }) {
  if (typeof serve !== "function") throw new Error("no Bun.serve to bridge the TUI's server");
  const password = randomPassword();
  const expected = basicAuth({ username: "opencode", password });
  const upstreamAuth = basicAuth(serverCreds ?? {});
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(request) {
      const url = new URL(request.url);
      const given = request.headers.get("authorization");
      const token = url.searchParams.get("auth_token");
      if (given !== expected && (!token || `Basic ${token}` !== expected)) {
        return new Response("", { status: 401, headers: { "www-authenticate": 'Basic realm="Secure Area"' } });
      }
      url.searchParams.delete("auth_token");
      const headers = new Headers(request.headers);
      headers.delete("authorization");
      headers.delete("host");
      if (upstreamAuth) headers.set("authorization", upstreamAuth);
      const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.arrayBuffer();
      return forward(new Request(new URL(url.pathname + url.search, target), { method: request.method, headers, body }));
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    username: "opencode",
    password,
    stop: () => server.stop(true),
  };
}

function randomPassword() {
  const bytes = new Uint8Array(24);
  globalThis.crypto.getRandomValues(bytes);
  return Buffer.from(bytes).toString("base64url");
}

/** The V2 service state files to look at, most likely first. */
export function serviceFiles({ env = process.env, channel } = {}) {
  const state = env.XDG_STATE_HOME || path.join(env.HOME || os.homedir(), ".local", "state");
  const names = ["service.json"];
  if (channel && channel !== "latest" && channel !== "stable") names.unshift(`service-${channel}.json`);
  return names.map((name) => path.join(state, "opencode", name));
}

/** The V2 background service this process is (its state file names our pid), or `undefined`. */
export function serviceOfThisProcess({ env = process.env, channel, pid = process.pid, read = readFileSync } = {}) {
  for (const file of serviceFiles({ env, channel })) {
    try {
      const info = JSON.parse(read(file, "utf8"));
      if (info?.pid === pid && typeof info.url === "string") {
        return { url: info.url.replace(/\/$/, ""), username: "opencode", password: info.password || undefined };
      }
    } catch {
      // missing or unreadable: not ours
    }
  }
  return undefined;
}

/** Listening TCP ports of this process (Linux `/proc`), as loopback URLs. */
export function listeningUrls({ procRoot = "/proc/self" } = {}) {
  const inodes = new Set();
  try {
    for (const fd of readdirSync(path.join(procRoot, "fd"))) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(path.join(procRoot, "fd", fd)));
        if (m) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return [];
  }
  const urls = [];
  for (const [file, v6] of [["tcp", false], ["tcp6", true]]) {
    let text;
    try {
      text = readFileSync(path.join(procRoot, "net", file), "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== "0A" || !inodes.has(cols[9])) continue;
      const [addr, portHex] = cols[1].split(":");
      const port = parseInt(portHex, 16);
      const any = /^0+$/.test(addr);
      const host = v6 ? (any || addr === "00000000000000000000000001000000" ? "[::1]" : null) : any ? "127.0.0.1" : hexToIPv4(addr);
      urls.push(`http://${host ?? "127.0.0.1"}:${port}`);
    }
  }
  return [...new Set(urls)];
}

function hexToIPv4(hex) {
  const n = parseInt(hex, 16);
  return [n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255].join(".");
}

/** `--hostname H --port N` of this process's command line, when N is a fixed port. */
export function argvUrl(argv = process.argv) {
  const value = (flag) => {
    const i = argv.indexOf(flag);
    if (i >= 0) return argv[i + 1];
    const eq = argv.find((a) => a.startsWith(`${flag}=`));
    return eq?.slice(flag.length + 1);
  };
  const port = Number(value("--port"));
  if (!port) return undefined;
  let host = value("--hostname") || "127.0.0.1";
  if (host === "0.0.0.0" || host === "::") host = "127.0.0.1";
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** `GET {url}/api/info`: the V2 server's `{version, pid, urls}`, or `undefined`. */
export async function v2Info(url, creds, { fetchFn = fetch, timeoutMs = 1500 } = {}) {
  try {
    const headers = {};
    const auth = basicAuth(creds);
    if (auth) headers.authorization = auth;
    const res = await fetchFn(`${url}/api/info`, { headers, signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok || !(res.headers.get("content-type") ?? "").includes("application/json")) return undefined;
    return await res.json();
  } catch {
    return undefined;
  }
}

/**
 * The URL and credentials of the V2 server this plugin runs in: the background service whose
 * state file names our pid, else one of our listening sockets whose `/api/info` names our pid.
 * Returns `{url, username, password}` or `{error}`.
 */
export async function findV2Server({ env = process.env, channel, pid = process.pid, argv = process.argv, fetchFn = fetch, procRoot } = {}) {
  const service = serviceOfThisProcess({ env, channel, pid });
  if (service) return service;
  const creds = envCredentials(env);
  const candidates = [argvUrl(argv), ...listeningUrls({ procRoot })].filter(Boolean);
  for (const url of [...new Set(candidates)]) {
    const info = await v2Info(url, creds, { fetchFn });
    if (info && info.pid === pid) return { url, ...creds };
  }
  return {
    error:
      "cannot tell the URL of this OpenCode server (no service state file names this process, and none of its listening ports answered /api/info with its pid)",
  };
}
