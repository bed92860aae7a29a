// Operations: status and history, start/stop ingestion and the incremental loop, fusion training,
// rules refresh, explainer clear, shutdown (confirmed), process CPU and memory.
import { TimeChart } from "./charts.js";
import {
  $, $$, StatusView, api, boot, confirmAction, fillKV, fmtAgo, fmtBytes, fmtDuration, fmtTime, fmtValue, h,
  ingestionWord, jobForm, live, pill, refreshWord, renderJobs, setPill, throttle,
} from "./console.js";

let charts = null;
const status = new StatusView(applyStatus);

const STATUS_ROWS = [
  ["state", "dataflow"],
  ["ingestion", "ingestion"],
  ["refresh", "incremental refresh"],
  ["events_in", "events in (since start)"],
  ["events_per_s", "events / s"],
  ["backlog", "log backlog (events not folded)"],
  ["lag_s", "lag"],
  ["refresh_queue", "refresh queue"],
  ["refresh_backfill", "of which backfill (new model)"],
  ["oldest_pending_s", "oldest pending refresh"],
  ["refreshes_per_s", "refreshes / s"],
  ["model_version", "model version"],
  ["device", "device"],
  ["workers", "workers"],
  ["pid", "pid"],
  ["started_at", "started"],
  ["updated_at", "status written"],
];

function applyStatus(v) {
  const { df, log, models, full } = v;
  const rows = STATUS_ROWS.filter(([k]) => k in df && df[k] !== null).map(([k, label]) => {
    const val = df[k];
    if (k === "state") return [label, pill(v.running ? "running" : "stopped", v.running ? "running" : df.state === "unknown" ? "not running" : "stopped")];
    // the flow's own word in brackets when it differs from the console's (paused → stopped)
    if (k === "ingestion") return [label, pill(ingestionWord(v), v.running && val !== ingestionWord(v) ? `${ingestionWord(v)} (${val})` : ingestionWord(v))];
    if (k === "refresh") return [label, pill(refreshWord(v), v.running && val !== refreshWord(v) ? `${refreshWord(v)} (${val})` : refreshWord(v))];
    if (k === "lag_s" || k === "oldest_pending_s") return [label, fmtDuration(val)];
    if (k.endsWith("_at")) return [label, val ? `${fmtTime(val)} (${fmtAgo(val)})` : "–"];
    return [label, fmtValue(val), "num"];
  });
  rows.push(["last event", log.last_event_at ? `seq ${fmtValue(log.last_seq)} · ${fmtTime(log.last_event_at)} (${fmtAgo(log.last_event_at)})` : "–"]);
  rows.push(["dead letters", fmtValue(log.dead_letters), "num"]);
  rows.push(["models", `HGT ${models.hgt ?? "none"} · fusion ${models.fusion ?? "none"}`]);
  if (full.api) rows.push(["database", full.api.db], ["API uptime", fmtDuration(full.api.uptime_s)]);
  if (full.shutting_down) rows.push(["API", pill("shutting_down", "shutting down")]);
  fillKV($("#status-table tbody"), rows);
  setPill("#ctl-ingestion", ingestionWord(v), ingestionWord(v));
  setPill("#ctl-refresh", refreshWord(v), refreshWord(v));
  document.body.dataset.ingestion = ingestionWord(v);
  if (v.running) charts.eps.push(df.events_per_s);
  if (Array.isArray(full.history)) renderHistory(full.history);
  if (Array.isArray(full.jobs)) renderJobs($("#jobs-table tbody"), full.jobs);
}

function applyMetrics(m) {
  const procs = m?.processes || {};
  if (procs.api) {
    charts.cpu.push(procs.api.cpu_percent);
    charts.mem.push(procs.api.rss_bytes);
  }
  if (procs.dataflow) {
    charts.dfCpu.push(procs.dataflow.cpu_percent);
    charts.dfMem.push(procs.dataflow.rss_bytes);
  }
}

function renderHistory(history) {
  const body = $("#history-table tbody");
  if (!history.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "hint" }, "no operations yet")));
    return;
  }
  body.replaceChildren(
    ...history.slice(0, 50).map((r) =>
      h(
        "tr",
        {},
        h("td", {}, fmtTime(r.ts)),
        h("td", {}, r.source || "–"),
        h("td", {}, h("code", {}, r.command)),
        h("td", { class: "wrap" }, r.params && Object.keys(r.params).length ? fmtValue(r.params) : ""),
        h("td", {}, pill(r.state)),
        h("td", { class: "wrap" }, r.effect || ""),
      ),
    ),
  );
}

function showResult(kind, text) {
  const box = $("#op-result");
  box.hidden = false;
  box.className = `notice notice-${kind}`;
  box.textContent = text;
}

/** One line for a command's answer: {command, state, effect, resulting, message} or {command, effect}. */
function describe(op, res) {
  if (!res || typeof res !== "object") return `${op}: ${fmtValue(res)}`;
  const bits = [res.command || op];
  if (res.state) bits.push(res.state);
  const resulting = Object.entries(res.resulting || {}).map(([k, val]) => `${k} ${val}`);
  if (resulting.length) bits.push(`now ${resulting.join(", ")}`);
  if (res.effect) bits.push(res.effect);
  if (res.message) bits.push(res.message);
  if (res.dataflow) bits.push(`dataflow: ${res.dataflow}`);
  if (Array.isArray(res.cancelled_jobs) && res.cancelled_jobs.length) bits.push(`cancelled jobs ${res.cancelled_jobs.join(", ")}`);
  return bits.join(" — ");
}

function resultKind(res) {
  if (res?.state === "rejected" || res?.state === "expired") return "error";
  if (res?.state === "pending") return "warn";
  return "ok";
}

async function runOp(op, button) {
  button.disabled = true;
  showResult("info", `${op}: sending…`);
  try {
    const res = await api(`/operations/${op}`, { method: "POST" });
    showResult(resultKind(res), describe(op, res));
    await status.load();
  } catch (err) {
    showResult("error", `${op}: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

async function shutdown(button) {
  const ok = await confirmAction(
    "Shut the system down?",
    "Running jobs are stopped, the dataflow stops at its next snapshot, then the API exits. This console will lose its connection; start the system again with “ups up”.",
    "Shut down",
  );
  if (!ok) return;
  button.disabled = true;
  try {
    const res = await api("/operations/shutdown", { method: "POST" });
    showResult("warn", describe("shutdown", res));
  } catch (err) {
    showResult("error", `shutdown: ${err.message}`);
    button.disabled = false;
  }
}

boot(async () => {
  const box = $("#ops-charts");
  charts = {
    cpu: new TimeChart(box, { title: "API CPU", name: "api-cpu", unit: "%", cls: "series-c" }),
    mem: new TimeChart(box, { title: "API memory (RSS)", name: "api-memory", format: fmtBytes, cls: "series-d" }),
    dfCpu: new TimeChart(box, { title: "Dataflow CPU", name: "dataflow-cpu", unit: "%", cls: "series-c" }),
    dfMem: new TimeChart(box, { title: "Dataflow memory (RSS)", name: "dataflow-memory", format: fmtBytes, cls: "series-d" }),
    eps: new TimeChart(box, { title: "Events / s", name: "eps", cls: "series-a" }),
  };
  for (const b of $$("[data-op]")) b.addEventListener("click", () => runOp(b.dataset.op, b));
  $("#shutdown").addEventListener("click", (ev) => shutdown(ev.currentTarget));
  jobForm($("#fusion-form"), {
    path: "/operations/fusion/train",
    box: $("#fusion-job"),
    title: "Fusion training",
    onDone: () => status.load().catch(() => {}),
  });
  live.on("metrics", applyMetrics);
  live.on("job", throttle(() => status.reread(), 1500));
  await status.start();
});
