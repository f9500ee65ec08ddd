// The plugin RPC that carries toasts from the server plugin to the TUI plugin (OpenCode 2).
//
// A V2 server plugin cannot show a toast: toasts are the TUI's. `ctx.rpc.register(RPC)` gives
// the server side `events.emit("toast", data)`, which OpenCode publishes on `/api/event` as
// `{"type": "rpc.orch.task.toast", "data": …, "location": {directory}}`; the TUI plugin
// (`tui.js`) listens with `api.client.rpc(RPC).events.on("toast", …)` and calls
// `api.ui.toast.show`. Schemas may be Standard Schema objects; this one accepts anything.

const ANY = Object.freeze({
  "~standard": Object.freeze({ version: 1, vendor: "orch-task", validate: (value) => ({ value }) }),
});

export const RPC = Object.freeze({
  id: "orch.task",
  methods: Object.freeze({}),
  events: Object.freeze({ toast: Object.freeze({ schema: ANY }) }),
});

/** The `/api/event` type of a toast event. */
export const TOAST_EVENT = `rpc.${RPC.id}.toast`;
