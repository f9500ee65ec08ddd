// Hybrid OpenCode plugin: one file, loaded by V1 (1.18.33: default.server) and V2 (2.1.2: default.setup).
import { writeFileSync } from "node:fs";
const LOG = process.env.ORCH_PLUGIN_LOG ?? "/tmp/orch-task-log";

// ---- V1: server(input) returns hooks. Slash commands come from config `command`; the hook
// `command.execute.before` sees {command, sessionID, arguments}.
async function server(input) {
  writeFileSync(`${LOG}-v1-init.json`, JSON.stringify({ directory: input.directory, worktree: input.worktree, serverUrl: String(input.serverUrl) }));
  return {
    "command.execute.before": async (cmd, output) => {
      if (cmd.command !== "orchtask") return;
      writeFileSync(`${LOG}-v1-ran.json`, JSON.stringify(cmd));
      await input.client.tui.showToast({ body: { message: `task: ${cmd.arguments}`, variant: "success" } });
      await input.client.session.prompt({ path: { id: cmd.sessionID }, body: { noReply: true, parts: [{ type: "text", text: `[orch] task recorded: ${cmd.arguments}` }] } });
    },
  };
}

// ---- V2: setup(ctx); commands are registered with ctx.command.transform.
async function setup(ctx) {
  writeFileSync(`${LOG}-v2-init.json`, JSON.stringify({ location: ctx.location }));
  await ctx.command.transform((draft) => {
    draft.add({
      name: "orchtask",
      description: "Record an orchestrator task",
      execute: async (input) => {
        writeFileSync(`${LOG}-v2-ran.json`, JSON.stringify(input));
        await ctx.session.synthetic({ sessionID: input.sessionID, text: `[orch] task recorded: ${input.prompt.text}`, resume: false });
      },
    });
  });
}

export default { id: "orch.task", server, setup };
