// `/task` inside OpenCode: one entry for both generations.
//
// OpenCode 1 (1.18.33) calls `server(input, options)` and uses the hooks it returns; OpenCode 2
// (2.1.2) calls `setup(ctx)`. 1.18.33 also calls `setup` with a prototype context (no
// `session`, no `location`), which is ignored. The module has no named exports: V1 would take
// them for legacy plugin functions.
//
// All mission logic is the engine's (task_cli, Rust). This file registers the commands, starts
// the engine on the same server with the user's session as parent, relays its progress and
// posts the summary. See README.md.

import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { COMMANDS, MissionController, controllers } from "./lib/controller.js";
import { findEngine, readRecordedPath } from "./lib/engine.js";
import { RPC } from "./lib/rpc.js";
import { basicAuth, envCredentials, findV2Server, isV1Placeholder, startBridge } from "./lib/server.js";

const PLUGIN_ID = "orch.task";

/** The hidden agent that answers V1's command turn (V1 always prompts a command's text). */
const RELAY_AGENT = "orch-task";

const RELAY_PROMPT = [
  "[orch-agent:orch-task] You relay the result of an orchestrator command that already ran outside of you.",
  "The user's last message is that result. Acknowledge it in one short sentence.",
  "Never work on the mission yourself: the orchestrator's own agents do that in child sessions.",
].join(" ");

function pluginDir() {
  try {
    return path.dirname(fileURLToPath(import.meta.url));
  } catch {
    return undefined;
  }
}

/** Where the path recorded at install may be: next to this file, or the project's install. */
function recordDirs(projectDir) {
  return [pluginDir(), projectDir && path.join(projectDir, ".opencode", "plugins", "orch-task")];
}

function engineFinder(projectDir, env = process.env) {
  return () => findEngine({ env, recorded: readRecordedPath(recordDirs(projectDir)) });
}

function controllerFor(dir, host) {
  const all = controllers();
  let controller = all.get(dir);
  if (!controller) {
    controller = new MissionController({ dir, host, engine: engineFinder(dir) });
    all.set(dir, controller);
  } else {
    controller.host = host;
  }
  return controller;
}

// ---------------------------------------------------------------------------------------------
// OpenCode 1

let bridge;

async function v1Server(input) {
  const creds = envCredentials();
  if (!isV1Placeholder(input.serverUrl)) return { url: String(input.serverUrl).replace(/\/$/, ""), ...creds };
  // The TUI's server runs in a worker without listening: bridge the client's in-process fetch.
  if (!bridge) {
    const forward = input.client?._client?.getConfig?.().fetch;
    if (typeof forward !== "function") {
      return { error: "this OpenCode TUI does not listen on a port; start it with `opencode --port 4096`" };
    }
    bridge = startBridge({ forward, target: "http://localhost:4096", serverCreds: creds });
  }
  return { url: bridge.url, username: bridge.username, password: bridge.password };
}

/** Sessions whose command turn (the relay agent's answer) has not ended yet. */
const v1CommandTurns = new Map();

/**
 * Waits (≤ `limitMs`) until the session's command turn ended (its `session.idle` event) and
 * `GET /session/status` no longer lists the session as busy.
 */
async function v1WaitIdle(client, sessionID, limitMs = 30 * 60 * 1000) {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    const since = v1CommandTurns.get(sessionID);
    if (since !== undefined && Date.now() - since > 5 * 60 * 1000) v1CommandTurns.delete(sessionID);
    if (!v1CommandTurns.has(sessionID)) {
      const res = await client.session.status().catch(() => undefined);
      if (!res?.data || !res.data[sessionID]) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250).unref?.());
  }
}

/** Permission requests asked while a mission runs here, not answered yet: id → timer. */
const v1PendingPermissions = new Map();

/**
 * While a mission runs, a permission request that nobody answered within
 * `PERMISSION_NOTICE_MS` (the engine's policy answers at once what it can decide) becomes a
 * warning toast naming the session to open, so it does not wait unseen.
 */
function watchPermissions(event, controller) {
  const p = event?.properties ?? {};
  if (event?.type === "permission.asked" && controller.run && p.id) {
    const timer = setTimeout(() => {
      v1PendingPermissions.delete(p.id);
      controller.toast({
        title: "task: permission needed",
        message: `session ${p.sessionID} asks for ${p.permission ?? "a permission"} ${(p.patterns ?? []).join(", ")} — open it to answer`.trim(),
        variant: "warning",
        duration: 15000,
      });
    }, PERMISSION_NOTICE_MS);
    timer.unref?.();
    v1PendingPermissions.set(p.id, timer);
  } else if (event?.type === "permission.replied") {
    clearTimeout(v1PendingPermissions.get(p.requestID));
    v1PendingPermissions.delete(p.requestID);
  }
}

const PERMISSION_NOTICE_MS = 3000;

/** OpenCode 1: `server(input)` returns the hooks. */
async function server(input, options) {
  const dir = input.directory;
  const client = input.client;
  const host = {
    generation: "v1",
    options: options ?? {},
    server: () => v1Server(input),
    toast: (t) =>
      client.tui.showToast({
        body: { title: t.title, message: t.message, variant: t.variant ?? "info", duration: t.duration },
      }),
    // A `noReply` message that lands while the session's loop runs is answered by that loop:
    // wait until the session is idle first.
    message: async (sessionID, text) => {
      await v1WaitIdle(client, sessionID);
      return client.session.prompt({
        path: { id: sessionID },
        body: { noReply: true, parts: [{ type: "text", text }] },
      });
    },
  };
  const controller = controllerFor(dir, host);
  return {
    // Commands and the relay agent come from config in V1; a plugin adds them here. The four
    // command names are this plugin's (its hook answers them).
    config: async (config) => {
      config.command ??= {};
      for (const [name, description] of Object.entries(COMMANDS)) {
        config.command[name] = { template: `/${name} $ARGUMENTS`, description, agent: RELAY_AGENT };
      }
      config.agent ??= {};
      config.agent[RELAY_AGENT] ??= {
        mode: "primary",
        hidden: true,
        description: "Acknowledges /task commands (the orchestrator does the work)",
        prompt: RELAY_PROMPT,
        permission: { "*": "deny" },
      };
    },
    // The command ran: do it, and make its text (what the model and the user see) the result.
    "command.execute.before": async (command, output) => {
      if (!Object.hasOwn(COMMANDS, command.command)) return;
      v1CommandTurns.set(command.sessionID, Date.now());
      const reply = await controller.handle(command.command, command.arguments, command.sessionID);
      output.parts.splice(0, output.parts.length, { type: "text", text: reply });
    },
    event: async ({ event }) => {
      if (event?.type === "session.idle") v1CommandTurns.delete(event.properties?.sessionID);
      watchPermissions(event, controller);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// OpenCode 2

function shellQuote(s) {
  return `'${String(s).replaceAll("'", `'\\''`)}'`;
}

/**
 * Posts `text` in a V2 session without a model turn: a shell entry that prints it (shown at
 * once, no model call), else a synthetic inbox item with `resume: false` (delivered with the
 * next prompt).
 */
async function v2Message(ctx, serverInfo, sessionID, text, { summary, dir } = {}) {
  const base = dir ?? ctx.location.directory;
  let file;
  if (summary) {
    file = path.join(base, ".orchestrator", "task-summary.md");
  } else {
    file = path.join(os.tmpdir(), "opencode-orch-task", `${sessionID}-${Date.now()}.txt`);
    setTimeout(() => rmSync(file, { force: true }), 120000).unref?.();
  }
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, `${text}\n`);
    const target = await serverInfo();
    if (!target?.url) throw new Error(target?.error ?? "no server URL");
    const rel = path.relative(base, file);
    const shown = rel.startsWith("..") || path.isAbsolute(rel) ? file : rel;
    const headers = { "content-type": "application/json" };
    const auth = basicAuth(target);
    if (auth) headers.authorization = auth;
    const res = await fetch(`${target.url}/api/session/${encodeURIComponent(sessionID)}/shell`, {
      method: "POST",
      headers,
      body: JSON.stringify({ command: `cat ${shellQuote(shown)}` }),
      signal: AbortSignal.timeout(5000),
    });
    if (!res.ok) throw new Error(`shell entry: HTTP ${res.status}`);
  } catch {
    await ctx.session.synthetic({ sessionID, text, resume: false });
  }
}

/** OpenCode 2: `setup(ctx)` registers the commands and the toast RPC for one location. */
async function setup(ctx) {
  // 1.18.33 calls `setup` too, with a catalogue-only context: V1 is served by `server`.
  if (!ctx?.session || !ctx?.location?.directory || !ctx?.command?.transform) return undefined;
  const dir = ctx.location.directory;
  const active = (globalThis[Symbol.for("orch.task.v2")] ??= new Map());
  if (active.has(dir)) return undefined; // another copy of this plugin serves this location
  const token = {};
  active.set(dir, token);

  let rpc;
  try {
    rpc = await ctx.rpc?.register?.(RPC, {});
  } catch {
    rpc = undefined; // no TUI toasts, the rest works
  }
  let found;
  const serverInfo = async () => {
    if (!found?.url) found = await findV2Server({ channel: ctx.app?.channel });
    return found;
  };
  const host = {
    generation: "v2",
    options: ctx.options ?? {},
    server: serverInfo,
    toast: (t) => rpc?.events.emit("toast", { ...t, directory: dir }),
    message: (sessionID, text, opts) => v2Message(ctx, serverInfo, sessionID, text, opts),
  };
  const controller = controllerFor(dir, host);
  await ctx.command.transform((draft) => {
    for (const [name, description] of Object.entries(COMMANDS)) {
      draft.add({
        name,
        description,
        execute: async (input) => {
          const reply = await controller.handle(name, input?.prompt?.text ?? "", input.sessionID);
          await host.message(input.sessionID, reply).catch(() => {});
        },
      });
    }
  });
  return () => {
    if (active.get(dir) === token) active.delete(dir);
    return rpc?.dispose?.();
  };
}

export default { id: PLUGIN_ID, server, setup };
