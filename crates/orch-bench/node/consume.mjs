// Benchmark 3 baseline: the official SDK's event consumer (`client.event.subscribe()`) on the
// bench server's /event stream, routing each event to a per-session queue like the router.
import { createOpencodeClient } from "@opencode-ai/sdk";

const url = process.argv[2];
const client = createOpencodeClient({ baseUrl: url });
const bySession = new Map();
let events = 0;
let routed = 0;
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const sub = await client.event.subscribe();
for await (const ev of sub.stream) {
  if (ev.type === "bench.end") break;
  if (ev.type === "server.connected") continue;
  events++;
  const p = ev.properties ?? {};
  const sid = p.sessionID ?? p.info?.sessionID ?? p.part?.sessionID ?? p.info?.id;
  if (sid) {
    let q = bySession.get(sid);
    if (!q) {
      q = [];
      bySession.set(sid, q);
    }
    q.push(ev);
    if (q.length > 1024) q.length = 0;
    routed++;
  }
}
const seconds = (performance.now() - t0) / 1000;
// CPU time of the whole process (all its threads) over the same interval.
const cpu = process.cpuUsage(cpu0);
const cpu_seconds = (cpu.user + cpu.system) / 1e6;
console.log(JSON.stringify({ events, routed, seconds, cpu_seconds, sessions: bySession.size }));
process.exit(0);
