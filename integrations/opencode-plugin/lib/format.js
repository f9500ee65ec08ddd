// What the user reads: toast texts for the engine's events, the final summary, the status.
// Pure functions over task_cli's `--json` objects (see examples/task_cli/README.md).

const ROLES_ORDER = ["planner", "worker", "reviewer", "commander"];

/** `1234567` → `1,234,567`. */
export function thousands(n) {
  return Math.round(Number(n) || 0)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** A cost in the provider's unit: `$0.0123`, `$1.50`. */
export function money(cost) {
  const c = Number(cost) || 0;
  return c >= 1 ? `$${c.toFixed(2)}` : `$${c.toFixed(4)}`;
}

/** Seconds from a serde `Duration` (`{secs, nanos}`), a number of ms, or a number of s. */
export function seconds(elapsed) {
  if (elapsed == null) return 0;
  if (typeof elapsed === "number") return elapsed > 100000 ? elapsed / 1000 : elapsed;
  if (typeof elapsed === "object") return (Number(elapsed.secs) || 0) + (Number(elapsed.nanos) || 0) / 1e9;
  return 0;
}

/** `42 s`, `3 min 5 s`, `1 h 2 min`. */
export function duration(secs) {
  const s = Math.round(secs);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Total tokens and cost of a report's `usage` (per role). */
export function totals(report) {
  const out = { input: 0, output: 0, other: 0, cost: 0, turns: 0 };
  for (const usage of Object.values(report?.usage ?? {})) {
    const t = usage?.tokens ?? {};
    out.input += Number(t.input) || 0;
    out.output += Number(t.output) || 0;
    out.other += (Number(t.reasoning) || 0) + (Number(t.cache_read) || 0) + (Number(t.cache_write) || 0);
    out.cost += Number(usage?.cost) || 0;
    out.turns += Number(usage?.turns) || 0;
  }
  return out;
}

/** `completed`, `failed: why`, `stopped by the user`, … from a report's `status`. */
export function statusWords(status) {
  const s = typeof status === "string" ? { status } : (status ?? {});
  switch (s.status) {
    case "completed":
      return "completed";
    case "failed":
      return `failed: ${s.reason ?? "unknown reason"}`;
    case "stopped":
      return "stopped by the user (resumable: /task-resume)";
    case "budget_exceeded":
      return `stopped: the ${s.budget ?? ""} budget was exceeded`.replace("  ", " ");
    case "server_lost":
      return `interrupted: the OpenCode server went away (${s.reason ?? "?"})`;
    default:
      return s.status ? String(s.status) : "unknown";
  }
}

/** A word or two for an end status (toast titles). */
export function statusTitle(status) {
  const s = typeof status === "string" ? status : status?.status;
  const words = { completed: "completed", failed: "failed", stopped: "stopped", budget_exceeded: "stopped", server_lost: "interrupted" };
  return words[s] ?? String(s ?? "ended");
}

/** The toast variant for an end status. */
export function statusVariant(status) {
  const s = typeof status === "string" ? status : status?.status;
  if (s === "completed") return "success";
  if (s === "stopped") return "warning";
  return "error";
}

function itemCounts(items) {
  const list = Array.isArray(items) ? items : [];
  const done = list.filter((i) => i.state === "done").length;
  const failed = list.filter((i) => i.state === "failed").length;
  return { total: list.length, done, failed, list };
}

/**
 * The final summary posted in the user's session: the status, the items, tokens, cost, time
 * and where the report is.
 */
export function summaryText({ mission, report, exitCode, dir, reportPath }) {
  const lines = [];
  if (!report) {
    lines.push(`task_cli: the mission ended without a report (exit code ${exitCode ?? "?"}).`);
    if (mission) lines.push(`Mission: ${mission}`);
    lines.push(`Directory: ${dir}`);
    lines.push("Run /task-status to see where it stands, /task-resume to continue it.");
    return lines.join("\n");
  }
  const { total, done, failed, list } = itemCounts(report.items);
  lines.push(`task_cli: mission ${statusWords(report.status)}`);
  lines.push(`Mission: ${report.mission ?? mission ?? ""}`.trimEnd());
  lines.push(`Items: ${done}/${total} done${failed ? `, ${failed} failed` : ""}`);
  for (const item of list) {
    const mark = item.state === "done" ? "✓" : item.state === "failed" ? "✗" : "·";
    const tries = item.attempts > 1 ? ` (${item.attempts} attempts)` : "";
    lines.push(`  ${mark} ${item.id} ${item.summary ?? ""}${tries}`.trimEnd());
  }
  const t = totals(report);
  const rank = (role) => (ROLES_ORDER.includes(role) ? ROLES_ORDER.indexOf(role) : ROLES_ORDER.length);
  const roles = Object.keys(report.usage ?? {}).sort((a, b) => rank(a) - rank(b));
  lines.push(
    `Tokens: ${thousands(t.input)} in, ${thousands(t.output)} out` +
      `${t.other ? `, ${thousands(t.other)} other` : ""} · cost ${money(t.cost)} · ${t.turns} turns (${roles.join(", ")})`,
  );
  const runs = Array.isArray(report.runs) ? report.runs.length : 1;
  lines.push(`Time: ${duration(seconds(report.elapsed))}${runs > 1 ? ` over ${runs} runs` : ""}`);
  const git = report.git;
  if (git?.branch) {
    // In a git repository the work is on the mission's branch, not in the checkout.
    const commits = Array.isArray(git.commits) ? git.commits.length : 0;
    lines.push(`Git: branch ${git.branch} from ${git.base_branch ?? "?"}, ${commits} commit${commits === 1 ? "" : "s"} (your checkout is untouched)`);
    if (commits) lines.push(`Merge it: task_cli merge --dir ${dir}`);
  }
  lines.push(`Report: ${reportPath ?? `${dir}/.orchestrator/report.json`}`);
  return lines.join("\n");
}

/** A toast for one engine `--json` line, or `null` when the line is not worth one. */
export function toastFor(event, progress = {}) {
  switch (event?.event) {
    case "plan_committed":
      return {
        title: "task: plan committed",
        message: `Plan v${event.version}: ${event.items} item${event.items === 1 ? "" : "s"}`,
        variant: "info",
      };
    case "item_done": {
      const of = progress.items ? ` · ${progress.done}/${progress.items} done` : "";
      const tries = event.attempts > 1 ? ` after ${event.attempts} attempts` : "";
      return { title: "task: item done", message: `${event.item} done${tries}${of}`, variant: "success" };
    }
    case "item_failed": {
      const blocked = event.blocked?.length ? ` (blocks ${event.blocked.join(", ")})` : "";
      return {
        title: "task: item failed",
        message: `${event.item} failed: ${event.reason ?? "?"}${blocked}`,
        variant: "error",
        duration: 10000,
      };
    }
    case "permission":
    case "permission_pending":
      if (event.event === "permission" && event.decision && event.decision.allowed !== undefined) return null;
      return {
        title: "task: permission needed",
        message:
          `${event.item ?? "an agent"} asks for ${event.decision?.permission ?? event.permission ?? "a permission"}` +
          ` ${(event.decision?.patterns ?? event.patterns ?? []).join(", ")} — open its session to answer`.trimEnd(),
        variant: "warning",
        duration: 15000,
        sessionID: event.session ?? event.session_id ?? event.sessionID,
      };
    case "reconnecting":
      return {
        title: "task: server lost",
        message: `reconnecting (attempt ${event.attempt ?? "?"}): ${event.reason ?? ""}`.trimEnd(),
        variant: "warning",
      };
    case "budget_exceeded":
      return { title: "task: budget", message: "a budget was exceeded; no new work starts", variant: "warning" };
    case "error":
      return {
        title: "task: error",
        message: `${event.message ?? "task_cli failed"}${event.fix ? ` — ${event.fix}` : ""}`,
        variant: "error",
        duration: 15000,
      };
    default:
      return null;
  }
}

/** The toast at the end of a run, from its `report` line (or exit code). */
export function endToast({ report, exitCode }) {
  if (!report) {
    return {
      title: "task: ended",
      message: `task_cli exited with code ${exitCode ?? "?"} before a report`,
      variant: exitCode === 130 ? "warning" : "error",
      duration: 10000,
    };
  }
  const { total, done } = itemCounts(report.items);
  const t = totals(report);
  return {
    title: `task: ${statusTitle(report.status)}`,
    message: `${done}/${total} items done · ${thousands(t.input + t.output)} tokens · ${money(t.cost)}`,
    variant: statusVariant(report.status),
    duration: 10000,
  };
}

/** The text of `/task-status` from `task_cli status --json` (and what this plugin runs). */
export function statusText({ status, running, error }) {
  const lines = [];
  if (running) {
    lines.push(`task_cli is running a mission here (pid ${running.pid}, started ${duration((Date.now() - running.startedAt) / 1000)} ago).`);
    lines.push(`Mission: ${running.mission}`);
    if (running.progress?.items) {
      const p = running.progress;
      lines.push(`Progress: ${p.done}/${p.items} done${p.failed ? `, ${p.failed} failed` : ""}${p.current.size ? `; working on ${[...p.current].join(", ")}` : ""}`);
    } else {
      lines.push("Progress: planning");
    }
  }
  if (error && !status) {
    if (!running) lines.push(error);
    return lines.join("\n");
  }
  if (!status) return lines.join("\n");
  if (!running) {
    if (status.mission) lines.push(`Mission: ${status.mission}`);
    const pid = status.running_pid ? ` (pid ${status.running_pid})` : "";
    lines.push(`State: ${status.state}${pid}${status.advice ? `; ${status.advice}` : ""}`);
  }
  const plan = status.plan;
  if (plan?.items) {
    const count = (s) => plan.items.filter((i) => i.state === s).length;
    lines.push(`Plan "${plan.title ?? ""}" v${plan.version}: ${count("done")} done, ${count("in_progress")} in progress, ${count("in_review")} in review, ${count("pending")} pending, ${count("failed")} failed`);
    for (const item of plan.items) lines.push(`  [${item.state}] ${item.id} ${item.summary ?? ""}`.trimEnd());
  }
  if (status.report && !running) {
    const t = totals(status.report);
    lines.push(`Last run: ${statusWords(status.report.status)} · ${thousands(t.input + t.output)} tokens · ${money(t.cost)}`);
  }
  return lines.join("\n");
}
