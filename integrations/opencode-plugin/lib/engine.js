// The engine: finding the task_cli binary, running it, reading its `--json` lines.

import { spawn } from "node:child_process";
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import path from "node:path";

/** The file next to the plugin entry in which `task_cli install --plugin` records its path. */
export const RECORD_FILE = "orch-task.json";

/** Whether `file` is an executable regular file. */
export function isExecutable(file) {
  try {
    if (!statSync(file).isFile()) return false;
    accessSync(file, process.platform === "win32" ? constants.F_OK : constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The path recorded at install (`{"task_cli": "/abs/path"}` in `orch-task.json` in one of
 * `dirs`), or `undefined`. A relative path is taken relative to the file's directory.
 */
export function readRecordedPath(dirs) {
  for (const dir of dirs) {
    if (!dir) continue;
    const file = path.join(dir, RECORD_FILE);
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    try {
      const value = JSON.parse(text)?.task_cli;
      if (typeof value === "string" && value) return { path: path.resolve(dir, value), file };
    } catch {
      return { path: undefined, file, error: `${file} is not valid JSON` };
    }
  }
  return undefined;
}

/**
 * Finds task_cli: `TASK_CLI` of the OpenCode process, else the path recorded at install, else
 * `task_cli` on `PATH`. Returns `{path, source}` or `{path: null, tried}` (what was looked at,
 * for the "how to install" message).
 */
export function findEngine({ env = process.env, recorded, exists = isExecutable, platform = process.platform } = {}) {
  const tried = [];
  if (env.TASK_CLI) {
    if (exists(env.TASK_CLI)) return { path: env.TASK_CLI, source: "TASK_CLI" };
    tried.push(`TASK_CLI=${env.TASK_CLI} (not an executable file)`);
  } else {
    tried.push("TASK_CLI (not set)");
  }
  if (recorded?.path) {
    if (exists(recorded.path)) return { path: recorded.path, source: "recorded" };
    tried.push(`${recorded.path} (recorded in ${recorded.file}; not an executable file)`);
  } else if (recorded?.error) {
    tried.push(recorded.error);
  } else {
    tried.push(`no recorded path (${RECORD_FILE})`);
  }
  const names = platform === "win32" ? ["task_cli.exe", "task_cli"] : ["task_cli"];
  for (const dir of (env.PATH ?? "").split(platform === "win32" ? ";" : ":")) {
    if (!dir) continue;
    for (const name of names) {
      const candidate = path.join(dir, name);
      if (exists(candidate)) return { path: candidate, source: "PATH" };
    }
  }
  tried.push("task_cli on PATH (not found)");
  return { path: null, tried };
}

/** What `/task` says when there is no engine. */
export function installHelp(tried) {
  return [
    "task_cli (the orchestrator engine) was not found.",
    `Looked at: ${tried.join("; ")}.`,
    "Install it and this plugin from a clone of the Rust OpenCode Orchestrator:",
    "  cargo install --locked --path examples/task_cli",
    "  task_cli install --plugin --dir <your project>",
    "or point OpenCode at a binary: start it with TASK_CLI=/path/to/task_cli in its environment.",
  ].join("\n");
}

/** Splits a byte stream into lines; `onLine` gets each complete line. */
export function lineSplitter(onLine) {
  let buffer = "";
  return {
    push(chunk) {
      buffer += chunk;
      let at;
      while ((at = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, at).replace(/\r$/, "");
        buffer = buffer.slice(at + 1);
        if (line.trim()) onLine(line);
      }
    },
    end() {
      if (buffer.trim()) onLine(buffer);
      buffer = "";
    },
  };
}

/** One stdout line as JSON, or `{event: "text", text}` when it is not JSON. */
export function parseLine(line) {
  try {
    const value = JSON.parse(line);
    if (value && typeof value === "object") return value;
  } catch {
    // not JSON: kept as text
  }
  return { event: "text", text: line };
}

/**
 * Starts task_cli with `args`; calls `onEvent(object)` for every stdout line and
 * `onExit({code, signal, stderr})` once. Returns the child process. Credentials go in `env`
 * only (never in `args`).
 */
export function startEngine(bin, args, { env, cwd, onEvent, onExit, spawnFn = spawn }) {
  const child = spawnFn(bin, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  const lines = lineSplitter((line) => onEvent(parseLine(line)));
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => lines.push(chunk));
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-8000);
  });
  let done = false;
  const finish = (code, signal) => {
    if (done) return;
    done = true;
    lines.end();
    onExit({ code, signal, stderr });
  };
  child.on("error", (error) => {
    stderr += `\n${error.message}`;
    finish(127, null);
  });
  // `close` comes after stdout is drained, so every line is seen before the exit.
  child.on("close", (code, signal) => finish(code, signal));
  return child;
}

/** Runs task_cli to the end (for `status`, `stop`): `{code, events, stderr}`; never throws. */
export function runEngine(bin, args, { env, cwd, timeoutMs = 15000, spawnFn = spawn } = {}) {
  return new Promise((resolve) => {
    const events = [];
    let timer;
    const child = startEngine(bin, args, {
      env,
      cwd,
      spawnFn,
      onEvent: (event) => events.push(event),
      onExit: ({ code, stderr }) => {
        clearTimeout(timer);
        resolve({ code, events, stderr });
      },
    });
    timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  });
}
