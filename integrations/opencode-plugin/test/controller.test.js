import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { MissionController, STOP_WAIT_MS } from "../lib/controller.js";
import { findEngine } from "../lib/engine.js";
import { FAKE_TASK_CLI, fakeEnv, recordingHost, tempDir, until } from "./helpers.js";

function controller(t, extra = {}, hostOptions = {}) {
  const dir = tempDir(t);
  const env = fakeEnv(dir, { TASK_CLI: FAKE_TASK_CLI, ...extra });
  const host = recordingHost(hostOptions);
  const c = new MissionController({ dir, host, env, engine: () => findEngine({ env, recorded: undefined }) });
  t.after(() => c.run?.child.kill("SIGKILL"));
  return { c, dir, host, env };
}

function calls(dir) {
  try {
    return readFileSync(path.join(dir, "fake.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  } catch {
    return [];
  }
}

test("/task without a mission prints the usage and starts nothing", async (t) => {
  const { c, dir } = controller(t);
  const reply = await c.handle("task", "   ", "ses_user");
  assert.match(reply, /Usage: \/task <mission>/);
  assert.deepEqual(calls(dir), []);
});

test("/task starts task_cli on the server with the user's session as parent; secrets stay in the environment", async (t) => {
  const { c, dir, host } = controller(t, {}, { generation: "v2" });
  const reply = await c.handle("task", "  make two files ", "ses_user");
  assert.match(reply, /Started the mission with task_cli \(pid \d+\)/);
  assert.match(reply, /Mission: make two files/);
  await until("the summary", () => host.messages.length === 1);
  const [status, run] = calls(dir);
  assert.deepEqual(status.argv, ["--json", "status", "--dir", dir]);
  assert.equal(status.password, null, "status gets no credentials");
  assert.deepEqual(run.argv, [
    "--json", "run", "make two files",
    "--dir", dir,
    "--server", "http://127.0.0.1:9",
    "--parent-session", "ses_user",
    "--opencode-generation", "v2",
  ]);
  assert.equal(run.cwd, dir);
  assert.equal(run.password, "s3cret");
  assert.equal(run.username, "opencode");
  assert.ok(!run.argv.some((a) => a.includes("s3cret")), "the password is never on the command line");
  assert.ok(!reply.includes("s3cret") && !host.messages[0].text.includes("s3cret"));
});

test("progress becomes toasts and the end a summary in the user's session", async (t) => {
  const { c, dir, host } = controller(t);
  await c.handle("task", "make two files", "ses_user");
  await until("the summary", () => host.messages.length === 1);
  assert.deepEqual(
    host.toasts.map((x) => [x.title, x.message, x.variant]),
    [
      ["task: started", "Mission: make two files", "info"],
      ["task: plan committed", "Plan v1: 2 items", "info"],
      ["task: item done", "T1 done · 1/2 done", "success"],
      ["task: item done", "T2 done after 2 attempts · 2/2 done", "success"],
      ["task: completed", "2/2 items done · 4,500 tokens · $0.0300", "success"],
    ],
  );
  const summary = host.messages[0];
  assert.equal(summary.sessionID, "ses_user");
  assert.equal(summary.opts.summary, true);
  assert.equal(
    summary.text,
    [
      "task_cli: mission completed",
      "Mission: make two files",
      "Items: 2/2 done",
      "  ✓ T1 first file",
      "  ✓ T2 second file (2 attempts)",
      "Tokens: 4,000 in, 500 out · cost $0.0300 · 4 turns (planner, worker)",
      "Time: 42 s",
      `Report: ${path.join(dir, ".orchestrator", "report.json")}`,
    ].join("\n"),
  );
  assert.equal(c.run, null, "the run is over");
});

test("a failed item is an error toast and the summary says what failed", async (t) => {
  const { c, host } = controller(t, { FAKE_MODE: "fail" });
  await c.handle("task", "make two files", "ses_user");
  await until("the summary", () => host.messages.length === 1);
  const failed = host.toasts.find((x) => x.title === "task: item failed");
  assert.deepEqual([failed.message, failed.variant], ["T2 failed: the review failed 3 times", "error"]);
  assert.equal(host.toasts.at(-1).variant, "error");
  assert.match(host.messages[0].text, /^task_cli: mission failed: 1 item failed\n/);
  assert.match(host.messages[0].text, /Items: 1\/2 done, 1 failed\n/);
  assert.match(host.messages[0].text, /✗ T2 second file/);
});

test("a second /task while one runs is reported, not started twice", async (t) => {
  const { c, dir } = controller(t, { FAKE_MODE: "hang" });
  const first = await c.handle("task", "make two files", "ses_user");
  const pid = Number(/pid (\d+)/.exec(first)[1]);
  const second = await c.handle("task", "something else", "ses_user");
  assert.match(second, new RegExp(`already running in .* \\(task_cli pid ${pid}\\); not starting another`));
  const resume = await c.handle("task-resume", "", "ses_user");
  assert.match(resume, /already running/);
  await until("the engine's log", () => calls(dir).some((x) => x.argv.includes("run")));
  assert.equal(calls(dir).filter((x) => x.argv.includes("run") || x.argv.includes("resume")).length, 1);
  // Two commands at once: only one engine.
  const both = await Promise.all([c.handle("task", "x", "s"), c.handle("task", "y", "s")]);
  assert.ok(both.every((r) => /already running|being started/.test(r)));
});

test("a mission that another task_cli runs in the directory is reported, not started", async (t) => {
  const { c, dir } = controller(t, { FAKE_STATUS: "running" });
  const reply = await c.handle("task", "make two files", "ses_user");
  assert.match(reply, /already running in .* \(task_cli pid 4242\), started outside this OpenCode; not starting another/);
  assert.equal(calls(dir).filter((x) => x.argv.includes("run")).length, 0);
});

test("/task-stop stops the running mission within 2 s; the summary says it is resumable", async (t) => {
  const { c, host } = controller(t, { FAKE_MODE: "hang" });
  await c.handle("task", "make two files", "ses_user");
  await until("the plan toast", () => host.toasts.some((x) => x.title === "task: plan committed"));
  const started = Date.now();
  const reply = await c.handle("task-stop", "", "ses_user");
  const took = Date.now() - started;
  assert.ok(took < STOP_WAIT_MS, `stopped in ${took} ms`);
  assert.match(reply, /Stopped the mission \(task_cli exited with code 130\)\. \/task-resume continues it\./);
  await until("the summary", () => host.messages.length === 1);
  assert.match(host.messages[0].text, /mission stopped by the user \(resumable: \/task-resume\)/);
  assert.equal(host.toasts.at(-1).variant, "warning");
});

test("/task-stop with nothing of ours running asks task_cli stop", async (t) => {
  const { c, dir } = controller(t);
  const reply = await c.handle("task-stop", "", "ses_user");
  assert.match(reply, /task_cli stop \(exit 1\): no mission is running/);
  assert.deepEqual(calls(dir)[0].argv, ["stop", "--dir", dir, "--wait", "2"]);
});

test("/task-resume runs task_cli resume with the same server and parent", async (t) => {
  const { c, dir, host } = controller(t, { FAKE_STATUS: "finished" });
  const reply = await c.handle("task-resume", "ignored", "ses_user");
  assert.match(reply, /Resuming the mission with task_cli/);
  assert.match(reply, /Mission: make two files/);
  await until("the summary", () => host.messages.length === 1);
  const run = calls(dir).find((x) => x.argv.includes("resume"));
  assert.deepEqual(run.argv, [
    "--json", "resume",
    "--dir", dir,
    "--server", "http://127.0.0.1:9",
    "--parent-session", "ses_user",
    "--opencode-generation", "v1",
  ]);
});

test("/task-status: no mission, a finished one, and ours while it runs", async (t) => {
  const none = controller(t);
  assert.match(await none.c.handle("task-status", "", "s"), /^No mission in .* yet\. Start one with \/task <mission>\.$/);

  const finished = controller(t, { FAKE_STATUS: "finished" });
  const text = await finished.c.handle("task-status", "", "s");
  assert.match(text, /^Mission: make two files\nState: finished\n/);
  assert.match(text, /Plan "Files" v1: 2 done, 0 in progress, 0 in review, 0 pending, 0 failed/);
  assert.match(text, /Last run: completed · 4,500 tokens · \$0\.0300/);

  const running = controller(t, { FAKE_MODE: "hang" });
  await running.c.handle("task", "make two files", "s");
  await until("T1 started", () => running.c.run?.progress.current.has("T1"));
  const live = await running.c.handle("task-status", "", "s");
  assert.match(live, /^task_cli is running a mission here \(pid \d+, started \d+ s ago\)\.\nMission: make two files\nProgress: 0\/2 done; working on T1/);
});

test("an engine error before any report is shown with what to do", async (t) => {
  const { c, host } = controller(t, { FAKE_MODE: "busy" });
  await c.handle("task", "make two files", "ses_user");
  await until("the summary", () => host.messages.length === 1);
  const text = host.messages[0].text;
  assert.match(text, /^task_cli: the mission ended without a report \(exit code 3\)\./);
  assert.match(text, /Error: another task_cli \(pid 4242\) is running a mission in/);
  assert.match(text, /What to do: wait for it, or `task_cli stop`/);
  assert.ok(host.toasts.some((x) => x.title === "task: error" && x.variant === "error"));
});

test("no engine: /task says how to install it; no server: /task says why", async (t) => {
  const dir = tempDir(t);
  const host = recordingHost();
  const c = new MissionController({ dir, host, env: {}, engine: () => findEngine({ env: { PATH: "" }, exists: () => false }) });
  assert.match(await c.handle("task", "x", "s"), /cargo install --locked --path examples\/task_cli\n {2}task_cli install --plugin/);
  assert.match(await c.handle("task-status", "", "s"), /was not found/);

  const noServer = controller(t, {}, { server: { error: "cannot tell the URL" } });
  assert.match(await noServer.c.handle("task", "x", "s"), /cannot attach the engine to this OpenCode server: cannot tell the URL/);
});
