// One project directory's missions: the four commands, the engine process, the relay of its
// events. Generation-neutral: a host adapter (V1 or V2, see ../index.js) shows toasts and
// posts messages, and says which server the engine attaches to.

import path from "node:path";

import { findEngine, installHelp, runEngine, startEngine } from "./engine.js";
import { endToast, statusText, summaryText, toastFor } from "./format.js";
import { engineEnv } from "./server.js";

/** The commands, with what OpenCode lists for them. */
export const COMMANDS = Object.freeze({
  task: "Run a mission with the Rust orchestrator (task_cli): /task <what to build>",
  "task-status": "Show the orchestrator mission of this project",
  "task-stop": "Stop the orchestrator mission of this project (resumable)",
  "task-resume": "Continue the orchestrator mission of this project",
});

/** How long `/task-stop` waits for the engine to exit. */
export const STOP_WAIT_MS = 2000;

const USAGE = [
  "Usage: /task <mission>, e.g. /task Add JWT auth to the API",
  "Also: /task-status, /task-stop, /task-resume.",
].join("\n");

/**
 * The controllers of this process, one per directory, shared by every copy of the plugin
 * module OpenCode loads (a V2 server may load the file and the package form side by side).
 */
export function controllers() {
  const key = Symbol.for("orch.task.controllers");
  if (!globalThis[key]) {
    const all = new Map();
    globalThis[key] = all;
    // OpenCode going away stops the missions it started (they stay resumable).
    process.once("exit", () => {
      for (const controller of all.values()) controller.run?.child.kill("SIGTERM");
    });
  }
  return globalThis[key];
}

export class MissionController {
  /**
   * @param {object} o
   * @param {string} o.dir the project directory (`--dir`)
   * @param {object} o.host `{generation, toast(t), message(sessionID, text, opts), server()}`
   * @param {() => object} [o.engine] finds task_cli (`findEngine` result)
   * @param {object} [o.env] the environment the engine inherits
   */
  constructor({ dir, host, engine, env = process.env, spawnFn }) {
    this.dir = dir;
    this.host = host;
    this.engine = engine ?? (() => findEngine({ env }));
    this.env = env;
    this.spawnFn = spawnFn;
    this.run = null;
    this.starting = false;
  }

  /** Runs one command; resolves to the text to show the user. Never throws. */
  async handle(command, args, sessionID) {
    try {
      switch (command) {
        case "task":
          return await this.start(sessionID, String(args ?? "").trim(), { resume: false });
        case "task-resume":
          return await this.start(sessionID, "", { resume: true });
        case "task-status":
          return await this.status();
        case "task-stop":
          return await this.stop();
        default:
          return USAGE;
      }
    } catch (error) {
      return `task: ${command} failed: ${error?.message ?? error}`;
    }
  }

  /** `/task <mission>` and `/task-resume`. */
  async start(sessionID, mission, { resume }) {
    if (!resume && !mission) return USAGE;
    if (this.run || this.starting) return this.alreadyRunning(this.run);
    this.starting = true;
    try {
      const engine = this.engine();
      if (!engine.path) return installHelp(engine.tried);
      const status = await this.statusJson(engine.path);
      if (status.status?.state === "running") {
        return [
          `A mission is already running in ${this.dir} (task_cli pid ${status.status.running_pid ?? "?"}), started outside this OpenCode; not starting another.`,
          `Mission: ${status.status.mission ?? "?"}`,
          "/task-status shows it, /task-stop stops it.",
        ].join("\n");
      }
      const server = await this.host.server();
      if (!server?.url) return `task: cannot attach the engine to this OpenCode server: ${server?.error ?? "no URL"}`;
      const args = ["--json", resume ? "resume" : "run"];
      if (!resume) args.push(mission);
      args.push(
        "--dir", this.dir,
        "--server", server.url,
        "--parent-session", sessionID,
        "--opencode-generation", this.host.generation,
      );
      const run = {
        mission: mission || status.status?.mission || "(resumed)",
        sessionID,
        resume,
        startedAt: Date.now(),
        progress: { items: 0, done: 0, failed: 0, current: new Set() },
        report: null,
        reportDir: this.dir,
        errors: [],
        exited: null,
        stopRequested: false,
      };
      run.exitedPromise = new Promise((resolve) => {
        run.resolveExit = resolve;
      });
      run.child = startEngine(engine.path, args, {
        cwd: this.dir,
        env: engineEnv(this.env, server),
        spawnFn: this.spawnFn,
        onEvent: (event) => this.onEvent(run, event),
        onExit: (exit) => this.onExit(run, exit),
      });
      run.pid = run.child.pid;
      this.run = run;
      this.toast({ title: "task: started", message: `${resume ? "Resuming" : "Mission"}: ${run.mission}`, variant: "info" });
      return [
        `${resume ? "Resuming the mission" : "Started the mission"} with task_cli (pid ${run.pid}) on this OpenCode server.`,
        `Mission: ${run.mission}`,
        `Its sessions appear under this one; progress comes as toasts, and a summary lands here at the end.`,
        `/task-status shows it, /task-stop stops it (resumable).`,
      ].join("\n");
    } finally {
      this.starting = false;
    }
  }

  alreadyRunning(run) {
    if (!run) return `A mission is being started in ${this.dir}; not starting another.`;
    return [
      `A mission is already running in ${this.dir} (task_cli pid ${run.pid}); not starting another.`,
      `Mission: ${run.mission}`,
      "/task-status shows it, /task-stop stops it.",
    ].join("\n");
  }

  /** `task_cli --json status --dir DIR` → `{status}` or `{error}`. */
  async statusJson(bin) {
    const out = await runEngine(bin, ["--json", "status", "--dir", this.dir], {
      cwd: this.dir,
      env: engineEnv(this.env, null),
      spawnFn: this.spawnFn,
    });
    const status = out.events.find((e) => e.event === "status");
    if (status) return { status };
    const error = out.events.find((e) => e.event === "error");
    if (error) return { error: error.message ?? "task_cli status failed", missing: /no mission/.test(error.message ?? "") };
    return { error: `task_cli status exited with ${out.code}: ${out.stderr.trim().split("\n").pop() ?? ""}` };
  }

  /** `/task-status`. */
  async status() {
    const engine = this.engine();
    if (!engine.path) {
      if (this.run) return statusText({ running: this.run });
      return installHelp(engine.tried);
    }
    const out = await this.statusJson(engine.path);
    if (out.missing && !this.run) return `No mission in ${this.dir} yet. Start one with /task <mission>.`;
    return statusText({ status: out.status, running: this.run, error: out.error });
  }

  /** `/task-stop`: SIGTERM to our engine (or `task_cli stop` for one started elsewhere). */
  async stop() {
    const run = this.run;
    if (run) {
      run.stopRequested = true;
      run.child.kill("SIGTERM");
      const exited = await Promise.race([
        run.exitedPromise,
        new Promise((resolve) => setTimeout(() => resolve(null), STOP_WAIT_MS + 500).unref?.()),
      ]);
      if (!exited) return `Asked task_cli (pid ${run.pid}) to stop; it is still finishing. /task-status shows when it is done.`;
      const how = exited.code != null ? `exited with code ${exited.code}` : `was ended by ${exited.signal}`;
      return `Stopped the mission (task_cli ${how}). /task-resume continues it.`;
    }
    const engine = this.engine();
    if (!engine.path) return installHelp(engine.tried);
    const out = await runEngine(engine.path, ["stop", "--dir", this.dir, "--wait", String(STOP_WAIT_MS / 1000)], {
      cwd: this.dir,
      env: engineEnv(this.env, null),
      spawnFn: this.spawnFn,
    });
    const text = [...out.events.map((e) => e.message ?? e.text ?? ""), out.stderr.trim()].filter(Boolean).join("\n");
    return out.code === 0 ? `task_cli stop: ${text || "stopped"}` : `task_cli stop (exit ${out.code}): ${text || "nothing to stop"}`;
  }

  toast(toast) {
    Promise.resolve()
      .then(() => this.host.toast(toast))
      .catch(() => {});
  }

  onEvent(run, event) {
    const p = run.progress;
    switch (event.event) {
      case "plan_committed":
        p.items = Number(event.items) || p.items;
        break;
      case "item_started":
        p.current.add(event.item);
        break;
      case "item_done":
        p.done += 1;
        p.current.delete(event.item);
        break;
      case "item_failed":
        p.failed += 1;
        p.current.delete(event.item);
        break;
      case "report":
        run.report = event.report ?? null;
        run.reportExit = event.exit_code;
        if (event.dir) run.reportDir = event.dir;
        return;
      case "error":
        run.errors.push(event);
        break;
      default:
        break;
    }
    const toast = toastFor(event, p);
    if (toast) this.toast({ ...toast, sessionID: toast.sessionID ?? undefined });
  }

  async onExit(run, { code, signal, stderr }) {
    run.exited = { code, signal };
    if (this.run === run) this.run = null;
    run.resolveExit(run.exited);
    const exitCode = run.reportExit ?? code;
    this.toast(endToast({ report: run.report, exitCode }));
    let text = summaryText({
      mission: run.mission,
      report: run.report,
      exitCode,
      dir: run.reportDir,
      reportPath: path.join(run.reportDir, ".orchestrator", "report.json"),
    });
    if (!run.report) {
      const error = run.errors.at(-1);
      if (error) text += `\nError: ${error.message ?? ""}${error.fix ? `\nWhat to do: ${error.fix}` : ""}`;
      else if (stderr?.trim()) text += `\nLast output: ${stderr.trim().split("\n").slice(-3).join("\n")}`;
    }
    try {
      await this.host.message(run.sessionID, text, { summary: true, dir: run.reportDir });
    } catch {
      // the session may be gone; the toast and report.json remain
    }
    run.summaryPosted = true;
    run.resolveSummary?.();
  }
}
