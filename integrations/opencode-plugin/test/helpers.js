// Shared by the tests: temporary directories, the fake task_cli, waiting.

import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const FAKE_TASK_CLI = fileURLToPath(new URL("./fixtures/fake-task-cli.mjs", import.meta.url));

/** A new temporary directory, removed by `t.after`. */
export function tempDir(t, prefix = "orch-task-") {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Polls `check` every 10 ms until it returns a truthy value (or fails after `ms`). */
export async function until(what, check, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The environment for the fake task_cli: ours plus `extra`, with its log file. */
export function fakeEnv(dir, extra = {}) {
  return { PATH: process.env.PATH, FAKE_LOG: path.join(dir, "fake.log"), FAKE_DELAY_MS: "2", ...extra };
}

/** A host adapter that records what the controller shows. */
export function recordingHost({ generation = "v1", server = { url: "http://127.0.0.1:9", username: "opencode", password: "s3cret" } } = {}) {
  const host = {
    generation,
    toasts: [],
    messages: [],
    server: async () => server,
    toast: async (t) => {
      host.toasts.push(t);
    },
    message: async (sessionID, text, opts) => {
      host.messages.push({ sessionID, text, opts });
    },
  };
  return host;
}
