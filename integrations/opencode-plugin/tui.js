// The OpenCode 2 TUI side of `/task`: turns the server plugin's toast events into toasts.
//
// A V2 server plugin has no toast API; the TUI does (`api.ui.toast.show`). OpenCode loads this
// file as the `tui` entry of the plugin directory (`.opencode/plugins/orch-task/tui.js`) in the
// TUI process, next to `index.js` (the server entry) in the server. A toast naming a session
// other than the one shown gets an "Open" action from the TUI.

import { RPC } from "./lib/rpc.js";

/** Whether a toast event is for the directory this TUI shows. */
function forThisLocation(api, data) {
  const here = api.location?.directory;
  return !data?.directory || !here || data.directory === here;
}

export default {
  id: "orch.task",
  setup(api) {
    const rpc = api.client.rpc(RPC);
    return rpc.events.on("toast", (event) => {
      const data = event?.data ?? {};
      if (!forThisLocation(api, data) || !data.message) return;
      api.ui.toast.show({
        title: data.title,
        message: data.message,
        variant: data.variant ?? "info",
        duration: data.duration,
        sessionID: data.sessionID,
      });
    });
  },
};
