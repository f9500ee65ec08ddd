import assert from "node:assert/strict";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { findEngine, installHelp, isExecutable, lineSplitter, parseLine, readRecordedPath, runEngine } from "../lib/engine.js";
import { FAKE_TASK_CLI, fakeEnv, tempDir } from "./helpers.js";

function executable(dir, name) {
  const file = path.join(dir, name);
  writeFileSync(file, "#!/bin/sh\nexit 0\n");
  chmodSync(file, 0o755);
  return file;
}

test("TASK_CLI wins over the recorded path and PATH", (t) => {
  const dir = tempDir(t);
  const viaEnv = executable(dir, "env_task_cli");
  const recorded = executable(dir, "recorded_task_cli");
  mkdirSync(path.join(dir, "bin"));
  executable(path.join(dir, "bin"), "task_cli");
  const found = findEngine({ env: { TASK_CLI: viaEnv, PATH: path.join(dir, "bin") }, recorded: { path: recorded } });
  assert.deepEqual(found, { path: viaEnv, source: "TASK_CLI" });
});

test("the recorded path comes before PATH", (t) => {
  const dir = tempDir(t);
  const recorded = executable(dir, "recorded_task_cli");
  mkdirSync(path.join(dir, "bin"));
  executable(path.join(dir, "bin"), "task_cli");
  const found = findEngine({ env: { PATH: path.join(dir, "bin") }, recorded: { path: recorded } });
  assert.deepEqual(found, { path: recorded, source: "recorded" });
});

test("PATH is searched last, directory by directory", (t) => {
  const dir = tempDir(t);
  mkdirSync(path.join(dir, "a"));
  mkdirSync(path.join(dir, "b"));
  const onPath = executable(path.join(dir, "b"), "task_cli");
  const found = findEngine({ env: { PATH: `${path.join(dir, "a")}:${path.join(dir, "b")}` }, recorded: undefined });
  assert.deepEqual(found, { path: onPath, source: "PATH" });
});

test("a TASK_CLI that is not executable falls through and is named in what was tried", (t) => {
  const dir = tempDir(t);
  const plain = path.join(dir, "not_executable");
  writeFileSync(plain, "x");
  assert.equal(isExecutable(plain), false);
  const found = findEngine({ env: { TASK_CLI: plain, PATH: "" }, recorded: { path: path.join(dir, "gone"), file: "orch-task.json" } });
  assert.equal(found.path, null);
  assert.match(found.tried[0], /TASK_CLI=.*not_executable \(not an executable file\)/);
  assert.match(found.tried[1], /gone \(recorded in orch-task.json/);
  assert.match(found.tried[2], /task_cli on PATH \(not found\)/);
});

test("no engine: the message says how to install it in two commands", () => {
  const found = findEngine({ env: { PATH: "" }, recorded: undefined, exists: () => false });
  const help = installHelp(found.tried);
  assert.match(help, /task_cli \(the orchestrator engine\) was not found/);
  assert.match(help, /TASK_CLI \(not set\)/);
  assert.match(help, /cargo install --locked --path examples\/task_cli/);
  assert.match(help, /task_cli install --plugin/);
});

test("the recorded path is read from orch-task.json, relative to its directory", (t) => {
  const dir = tempDir(t);
  const first = path.join(dir, "first");
  const second = path.join(dir, "second");
  mkdirSync(first);
  mkdirSync(second);
  writeFileSync(path.join(second, "orch-task.json"), JSON.stringify({ task_cli: "../bin/task_cli" }));
  const recorded = readRecordedPath([undefined, first, second]);
  assert.equal(recorded.path, path.join(dir, "bin", "task_cli"));
  assert.equal(recorded.file, path.join(second, "orch-task.json"));
  writeFileSync(path.join(first, "orch-task.json"), "{not json");
  assert.match(readRecordedPath([first]).error, /not valid JSON/);
  assert.equal(readRecordedPath([path.join(dir, "none")]), undefined);
});

test("stdout is split into lines across chunks; non-JSON lines are kept as text", () => {
  const lines = [];
  const split = lineSplitter((line) => lines.push(line));
  split.push('{"event":"sta');
  split.push('rted"}\r\n\n{"event":"plan_committed","items":2}\nplain ');
  split.push("text");
  split.end();
  assert.deepEqual(lines, ['{"event":"started"}', '{"event":"plan_committed","items":2}', "plain text"]);
  assert.deepEqual(parseLine(lines[1]), { event: "plan_committed", items: 2 });
  assert.deepEqual(parseLine("plain text"), { event: "text", text: "plain text" });
  assert.deepEqual(parseLine("42"), { event: "text", text: "42" });
});

test("runEngine collects the events and the exit code of the fake task_cli", async (t) => {
  const dir = tempDir(t);
  const out = await runEngine(FAKE_TASK_CLI, ["--json", "status", "--dir", dir], { env: fakeEnv(dir, { FAKE_STATUS: "running" }) });
  assert.equal(out.code, 0);
  assert.equal(out.events[0].event, "status");
  assert.equal(out.events[0].state, "running");
  const none = await runEngine(FAKE_TASK_CLI, ["--json", "status", "--dir", dir], { env: fakeEnv(dir) });
  assert.equal(none.code, 3);
  assert.match(none.events[0].message, /no mission in/);
  const missing = await runEngine(path.join(dir, "no_such_binary"), ["status"], { env: fakeEnv(dir) });
  assert.equal(missing.code, 127);
  assert.match(missing.stderr, /ENOENT/);
});
