// The hybrid entry: its shape for both generations, and each generation's adapter driven with
// stand-ins for what OpenCode passes (the shapes checked against 1.18.33 and 2.1.2).

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { test } from "node:test";

import * as entry from "../index.js";
import * as tuiEntry from "../tui.js";
import { RPC, TOAST_EVENT } from "../lib/rpc.js";
import { FAKE_TASK_CLI, tempDir, until } from "./helpers.js";

const plugin = entry.default;
const COMMAND_NAMES = ["task", "task-status", "task-stop", "task-resume"];

function useFakeEngine(t, dir, extra = {}) {
  const saved = { ...process.env };
  // TMPDIR: where V2 replies are written for their shell entries.
  Object.assign(process.env, { TASK_CLI: FAKE_TASK_CLI, FAKE_LOG: path.join(dir, "fake.log"), FAKE_DELAY_MS: "2", TMPDIR: dir, ...extra });
  t.after(() => {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
  });
}

function engineCalls(dir) {
  const file = path.join(dir, "fake.log");
  return existsSync(file) ? readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l)) : [];
}

test("one default export {id, server, setup} and no named export (V1 would call them)", () => {
  assert.deepEqual(Object.keys(entry), ["default"]);
  assert.equal(plugin.id, "orch.task");
  assert.equal(typeof plugin.server, "function");
  assert.equal(typeof plugin.setup, "function");
  assert.deepEqual(Object.keys(tuiEntry), ["default"]);
  assert.equal(tuiEntry.default.id, "orch.task");
  assert.equal(typeof tuiEntry.default.setup, "function");
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  assert.deepEqual(pkg.exports, { ".": "./index.js", "./server": "./index.js", "./tui": "./tui.js" });
  assert.deepEqual(pkg.dependencies ?? {}, {});
});

test("setup ignores OpenCode 1's prototype context (V1 is served by server)", async () => {
  let transformed = false;
  const v1Prototype = { options: {}, command: { transform: async () => (transformed = true), reload() {} }, agent: {} };
  assert.equal(await plugin.setup(v1Prototype), undefined);
  assert.equal(transformed, false);
});

// ---------------------------------------------------------------------------------------------
// OpenCode 1

function v1Input(dir, serverUrl = new URL("http://127.0.0.1:9")) {
  const seen = { toasts: [], prompts: [], busy: new Set() };
  const input = {
    directory: dir,
    worktree: dir,
    serverUrl,
    client: {
      tui: { showToast: async ({ body }) => seen.toasts.push(body) },
      session: {
        prompt: async (args) => seen.prompts.push(args),
        status: async () => ({ data: Object.fromEntries([...seen.busy].map((id) => [id, { type: "busy" }])) }),
      },
    },
  };
  return { input, seen };
}

test("V1: config adds the four commands and the hidden relay agent, keeping the user's config", async (t) => {
  const dir = tempDir(t);
  const { input } = v1Input(dir);
  const hooks = await plugin.server(input, {});
  assert.deepEqual(Object.keys(hooks).sort(), ["command.execute.before", "config", "event"]);
  const config = { command: { mine: { template: "x" } }, agent: { "orch-task": { prompt: "user's own" } } };
  await hooks.config(config);
  assert.deepEqual(Object.keys(config.command), ["mine", ...COMMAND_NAMES]);
  for (const name of COMMAND_NAMES) {
    assert.equal(config.command[name].agent, "orch-task");
    assert.match(config.command[name].template, /\$ARGUMENTS/);
    assert.ok(config.command[name].description.length > 10);
  }
  assert.deepEqual(config.agent["orch-task"], { prompt: "user's own" }, "an agent of that name is kept");
  const fresh = {};
  await hooks.config(fresh);
  assert.equal(fresh.agent["orch-task"].mode, "primary");
  assert.equal(fresh.agent["orch-task"].hidden, true);
  assert.deepEqual(fresh.agent["orch-task"].permission, { "*": "deny" });
  assert.match(fresh.agent["orch-task"].prompt, /^\[orch-agent:orch-task\] /);
});

test("V1: /task runs the engine, its text becomes the command's message, the summary waits for idle", async (t) => {
  const dir = tempDir(t);
  useFakeEngine(t, dir);
  const { input, seen } = v1Input(dir);
  const hooks = await plugin.server(input, {});
  const other = { parts: [{ type: "text", text: "init" }] };
  await hooks["command.execute.before"]({ command: "init", sessionID: "ses_1", arguments: "" }, other);
  assert.deepEqual(other.parts, [{ type: "text", text: "init" }], "other commands are left alone");

  const parts = [{ type: "text", text: "/task make two files" }];
  const output = { parts };
  await hooks["command.execute.before"]({ command: "task", sessionID: "ses_1", arguments: "make two files" }, output);
  assert.equal(output.parts, parts, "the same array (OpenCode keeps its own reference)");
  assert.equal(parts.length, 1);
  assert.match(parts[0].text, /^Started the mission with task_cli \(pid \d+\)/);
  await until("the end toast", () => seen.toasts.some((x) => x.title === "task: completed"));
  assert.ok(seen.toasts.every((x) => typeof x.variant === "string" && x.message));
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(seen.prompts.length, 0, "no summary while the command's own turn may still run");
  seen.busy.add("ses_1");
  await hooks.event({ event: { type: "session.idle", properties: { sessionID: "ses_1" } } });
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(seen.prompts.length, 0, "no summary while the session is busy");
  seen.busy.clear();
  await until("the summary", () => seen.prompts.length === 1);
  const [prompt] = seen.prompts;
  assert.deepEqual(prompt.path, { id: "ses_1" });
  assert.equal(prompt.body.noReply, true);
  assert.match(prompt.body.parts[0].text, /^task_cli: mission completed\n/);
  const run = engineCalls(dir).find((c) => c.argv.includes("run"));
  assert.deepEqual(run.argv.slice(-6), ["--server", "http://127.0.0.1:9", "--parent-session", "ses_1", "--opencode-generation", "v1"]);
});

test("V1: a TUI that does not listen gets a bridge; its URL and password go to the engine", async (t) => {
  const dir = tempDir(t);
  useFakeEngine(t, dir);
  const { input, seen } = v1Input(dir, new URL("http://localhost:4096"));
  let served;
  globalThis.Bun = { serve: (options) => ((served = options), { port: 40999, stop() {} }) };
  t.after(() => delete globalThis.Bun);
  input.client._client = { getConfig: () => ({ fetch: async () => new Response("{}") }) };
  const hooks = await plugin.server(input, {});
  const output = { parts: [] };
  await hooks["command.execute.before"]({ command: "task", sessionID: "ses_2", arguments: "x" }, output);
  assert.match(output.parts[0].text, /Started the mission/);
  await until("the run", () => engineCalls(dir).find((c) => c.argv.includes("run")));
  const run = engineCalls(dir).find((c) => c.argv.includes("run"));
  assert.equal(run.argv[run.argv.indexOf("--server") + 1], "http://127.0.0.1:40999");
  assert.equal(served.hostname, "127.0.0.1");
  assert.ok(run.password.length >= 24, "the bridge's own password");
  assert.equal(run.username, "opencode");
  await hooks.event({ event: { type: "session.idle", properties: { sessionID: "ses_2" } } });
  await until("the summary", () => seen.prompts.length === 1);
});

test("V1: a permission left unanswered during a mission becomes a toast; an answered one does not", async (t) => {
  const dir = tempDir(t);
  useFakeEngine(t, dir, { FAKE_MODE: "hang" });
  const { input, seen } = v1Input(dir);
  const hooks = await plugin.server(input, {});
  const output = { parts: [] };
  await hooks["command.execute.before"]({ command: "task", sessionID: "ses_p", arguments: "x" }, output);
  t.after(async () => {
    await hooks["command.execute.before"]({ command: "task-stop", sessionID: "ses_p", arguments: "" }, { parts: [] });
    await hooks.event({ event: { type: "session.idle", properties: { sessionID: "ses_p" } } });
    await until("the summary", () => seen.prompts.length === 1);
  });
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const ask = (id) => ({ type: "permission.asked", properties: { id, sessionID: "ses_child", permission: "edit", patterns: ["a.txt"] } });
  await hooks.event({ event: ask("per_answered") });
  await hooks.event({ event: ask("per_waiting") });
  await hooks.event({ event: { type: "permission.replied", properties: { sessionID: "ses_child", requestID: "per_answered", reply: "once" } } });
  t.mock.timers.tick(3000);
  t.mock.timers.reset();
  await until("the toast", () => seen.toasts.some((x) => x.title === "task: permission needed"));
  const notices = seen.toasts.filter((x) => x.title === "task: permission needed");
  assert.equal(notices.length, 1);
  assert.equal(notices[0].message, "session ses_child asks for edit a.txt — open it to answer");
  assert.equal(notices[0].variant, "warning");
});

// ---------------------------------------------------------------------------------------------
// OpenCode 2

function v2Ctx(dir, { shellWorks = true } = {}) {
  const seen = { adds: [], emitted: [], synthetic: [], registered: [], disposed: 0 };
  const ctx = {
    app: { name: "cli", version: "2.1.2", channel: "latest" },
    location: { directory: dir, project: { id: "global", directory: dir, canonical: dir } },
    options: {},
    session: { synthetic: async (x) => seen.synthetic.push(x) },
    rpc: Object.assign(() => ({}), {
      register: async (definition, handlers) => {
        seen.registered.push({ definition, handlers });
        return {
          dispose: () => seen.disposed++,
          events: { emit: async (name, data) => seen.emitted.push({ name, data }) },
        };
      },
    }),
    command: { transform: async (fn) => fn({ add: (c) => seen.adds.push(c) }) },
  };
  return { ctx, seen, shellWorks };
}

/** An HTTP server standing in for OpenCode 2's shell route, named by a service state file. */
async function fakeV2Server(t, { status = 204 } = {}) {
  const shells = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      shells.push({ url: req.url, auth: req.headers.authorization, body: JSON.parse(body || "{}") });
      res.writeHead(status).end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => server.close());
  const state = tempDir(t);
  mkdirSync(path.join(state, "opencode"));
  const url = `http://127.0.0.1:${server.address().port}`;
  writeFileSync(path.join(state, "opencode", "service.json"), JSON.stringify({ url, pid: process.pid, password: "svc-pw" }));
  return { shells, state, url };
}

test("V2: setup registers the four commands and the toast RPC, once per location", async (t) => {
  const dir = tempDir(t);
  const { ctx, seen } = v2Ctx(dir);
  const dispose = await plugin.setup(ctx);
  assert.deepEqual(seen.adds.map((c) => c.name), COMMAND_NAMES);
  assert.ok(seen.adds.every((c) => typeof c.execute === "function" && c.description));
  assert.equal(seen.registered.length, 1);
  assert.equal(seen.registered[0].definition, RPC);
  assert.equal(TOAST_EVENT, "rpc.orch.task.toast");
  const schema = RPC.events.toast.schema["~standard"];
  assert.deepEqual(schema.validate({ a: 1 }), { value: { a: 1 } });

  const again = v2Ctx(dir);
  assert.equal(await plugin.setup(again.ctx), undefined, "a second copy of the plugin stands aside");
  assert.equal(again.seen.adds.length, 0);
  await dispose();
  assert.equal(seen.disposed, 1);
  const third = v2Ctx(dir);
  const disposeThird = await plugin.setup(third.ctx);
  assert.equal(third.seen.adds.length, 4, "after dispose (a reload) the location is served again");
  await disposeThird();
});

test("V2: /task attaches to the service's URL, toasts through the RPC, posts text as shell entries", async (t) => {
  const dir = tempDir(t);
  const fake = await fakeV2Server(t);
  useFakeEngine(t, dir, { XDG_STATE_HOME: fake.state });
  const { ctx, seen } = v2Ctx(dir);
  const dispose = await plugin.setup(ctx);
  t.after(() => dispose());
  const task = seen.adds.find((c) => c.name === "task");
  await task.execute({ sessionID: "ses_v2", prompt: { text: "make two files" }, delivery: "steer" });
  await until("the summary shell entry", () => fake.shells.length === 2);
  const [reply, summary] = fake.shells;
  assert.equal(reply.url, "/api/session/ses_v2/shell");
  assert.equal(reply.auth, `Basic ${Buffer.from("opencode:svc-pw").toString("base64")}`);
  const replyFile = /^cat '(.+)'$/.exec(reply.body.command)[1];
  // The shell runs in the session's directory: the path is shown relative to it when inside.
  assert.match(readFileSync(path.resolve(dir, replyFile), "utf8"), /^Started the mission with task_cli/);
  assert.equal(summary.body.command, "cat '.orchestrator/task-summary.md'");
  assert.match(readFileSync(path.join(dir, ".orchestrator", "task-summary.md"), "utf8"), /^task_cli: mission completed\n/);
  assert.deepEqual(seen.synthetic, []);
  const run = engineCalls(dir).find((c) => c.argv.includes("run"));
  assert.equal(run.argv[run.argv.indexOf("--server") + 1], fake.url);
  assert.equal(run.argv[run.argv.indexOf("--opencode-generation") + 1], "v2");
  assert.equal(run.password, "svc-pw");
  const toasts = seen.emitted.filter((e) => e.name === "toast").map((e) => e.data);
  assert.deepEqual(toasts.map((x) => x.title), ["task: started", "task: plan committed", "task: item done", "task: item done", "task: completed"]);
  assert.ok(toasts.every((x) => x.directory === dir));
});

test("V2: when the shell route fails the text goes in as a synthetic item without a model turn", async (t) => {
  const dir = tempDir(t);
  const fake = await fakeV2Server(t, { status: 500 });
  useFakeEngine(t, dir, { XDG_STATE_HOME: fake.state });
  const { ctx, seen } = v2Ctx(dir);
  const dispose = await plugin.setup(ctx);
  t.after(() => dispose());
  await seen.adds.find((c) => c.name === "task-status").execute({ sessionID: "ses_s", prompt: { text: "" } });
  assert.deepEqual(seen.synthetic, [{ sessionID: "ses_s", text: `No mission in ${dir} yet. Start one with /task <mission>.`, resume: false }]);
});

test("TUI entry: toast events of this location become toasts; it returns its unsubscribe", () => {
  const shown = [];
  let listener;
  let off = false;
  const api = {
    location: { directory: "/p" },
    client: {
      rpc: (definition) => {
        assert.equal(definition, RPC);
        return { events: { on: (name, fn) => ((listener = { name, fn }), () => (off = true)) } };
      },
    },
    ui: { toast: { show: (t) => shown.push(t) } },
  };
  const dispose = tuiEntry.default.setup(api);
  assert.equal(listener.name, "toast");
  listener.fn({ type: TOAST_EVENT, data: { title: "task: item done", message: "T1 done", variant: "success", directory: "/p", sessionID: "ses_c" } });
  listener.fn({ type: TOAST_EVENT, data: { title: "elsewhere", message: "x", variant: "info", directory: "/other" } });
  listener.fn({ type: TOAST_EVENT, data: { title: "no message" } });
  assert.deepEqual(shown, [{ title: "task: item done", message: "T1 done", variant: "success", duration: undefined, sessionID: "ses_c" }]);
  dispose();
  assert.equal(off, true);
});
