import assert from "node:assert/strict";
import { test } from "node:test";

import { duration, endToast, money, seconds, statusText, summaryText, thousands, toastFor } from "../lib/format.js";

test("numbers, money and durations read well", () => {
  assert.equal(thousands(1234567), "1,234,567");
  assert.equal(thousands(12), "12");
  assert.equal(money(0.01234), "$0.0123");
  assert.equal(money(12.5), "$12.50");
  assert.equal(seconds({ secs: 3, nanos: 500000000 }), 3.5);
  assert.equal(seconds(2500000), 2500);
  assert.equal(seconds(42), 42);
  assert.equal(duration(42), "42 s");
  assert.equal(duration(185), "3 min 5 s");
  assert.equal(duration(3720), "1 h 2 min");
});

test("each engine event worth a toast gets one; the others none", () => {
  assert.deepEqual(toastFor({ event: "plan_committed", version: 2, items: 1 }), {
    title: "task: plan committed",
    message: "Plan v2: 1 item",
    variant: "info",
  });
  assert.equal(toastFor({ event: "item_done", item: "T3", attempts: 1 }, { items: 4, done: 2 }).message, "T3 done · 2/4 done");
  const failed = toastFor({ event: "item_failed", item: "T2", reason: "tests fail", blocked: ["T4", "T5"] });
  assert.equal(failed.message, "T2 failed: tests fail (blocks T4, T5)");
  assert.equal(failed.variant, "error");
  const error = toastFor({ event: "error", message: "the server does not answer", fix: "check --server" });
  assert.equal(error.message, "the server does not answer — check --server");
  for (const quiet of ["started", "item_started", "turn_finished", "reviewed", "notice", "finished", "report", "text"]) {
    assert.equal(toastFor({ event: quiet }), null, quiet);
  }
  // A permission the policy answered is not news; one it left to the user is.
  assert.equal(toastFor({ event: "permission", item: "T1", decision: { permission: "edit", patterns: ["a"], allowed: false } }), null);
  const pending = toastFor({ event: "permission_pending", item: "T1", session: "ses_child", permission: "bash", patterns: ["rm -rf build"] });
  assert.equal(pending.message, "T1 asks for bash rm -rf build — open its session to answer");
  assert.equal(pending.sessionID, "ses_child");
  assert.equal(pending.variant, "warning");
});

test("the end toast follows the status", () => {
  const report = (status) => ({ status, items: [{ state: "done" }, { state: "pending" }], usage: { worker: { tokens: { input: 10, output: 5 }, cost: 1.5 } } });
  assert.deepEqual(endToast({ report: report({ status: "completed" }) }), {
    title: "task: completed",
    message: "1/2 items done · 15 tokens · $1.50",
    variant: "success",
    duration: 10000,
  });
  assert.equal(endToast({ report: report({ status: "stopped" }) }).variant, "warning");
  assert.equal(endToast({ report: report({ status: "stopped" }) }).title, "task: stopped");
  assert.equal(endToast({ report: report({ status: "failed", reason: "x: y" }) }).title, "task: failed");
  assert.equal(endToast({ report: report({ status: "budget_exceeded", budget: "cost" }) }).title, "task: stopped");
  assert.equal(endToast({ report: report({ status: "server_lost", reason: "x" }) }).variant, "error");
  assert.equal(endToast({ report: report({ status: "server_lost", reason: "x" }) }).title, "task: interrupted");
  assert.match(endToast({ report: null, exitCode: 3 }).message, /exited with code 3 before a report/);
});

test("a summary without a report says how to go on", () => {
  const text = summaryText({ mission: "m", report: null, exitCode: 130, dir: "/p" });
  assert.equal(
    text,
    "task_cli: the mission ended without a report (exit code 130).\nMission: m\nDirectory: /p\nRun /task-status to see where it stands, /task-resume to continue it.",
  );
});

test("a summary of a git mission names its branch and how to merge it", () => {
  const report = {
    status: { status: "completed" },
    items: [{ id: "T1", state: "done", summary: "calc", attempts: 1 }],
    usage: { worker: { turns: 1, tokens: { input: 10, output: 5 }, cost: 0 } },
    elapsed: { secs: 5, nanos: 0 },
    git: { branch: "orch/calc", base_branch: "main", commits: [{ sha: "abc", subject: "T1: calc", item: "T1" }] },
  };
  const text = summaryText({ mission: "m", report, exitCode: 0, dir: "/p" });
  assert.match(text, /\nGit: branch orch\/calc from main, 1 commit \(your checkout is untouched\)\nMerge it: task_cli merge --dir \/p\n/);
  const plain = summaryText({ mission: "m", report: { ...report, git: null }, exitCode: 0, dir: "/p" });
  assert.doesNotMatch(plain, /Git:/);
});

test("status text of a running mission started elsewhere names its pid", () => {
  const text = statusText({ status: { mission: "m", state: "running", running_pid: 77, advice: "wait", plan: null, report: null } });
  assert.equal(text, "Mission: m\nState: running (pid 77); wait");
  assert.equal(statusText({ error: "task_cli status exited with 2: bad flag" }), "task_cli status exited with 2: bad flag");
});
