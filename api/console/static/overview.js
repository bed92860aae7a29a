// Overview: dataflow state and figures, live charts, the full-refresh form with job progress.
import { TimeChart } from "./charts.js";
import {
  $, StatusView, api, boot, fmtAgo, fmtBytes, fmtDuration, fmtInt, fmtNum, fmtTime, ingestionWord, jobForm, live,
  refreshWord, renderJobs, setPill, setText, throttle,
} from "./console.js";

let charts = null;

function makeCharts() {
  const box = $("#overview-charts");
  return {
    eps: new TimeChart(box, { title: "Events / s", name: "eps", cls: "series-a" }),
    queue: new TimeChart(box, { title: "Refresh queue", name: "queue", cls: "series-b" }),
    cpu: new TimeChart(box, { title: "Dataflow CPU", name: "cpu", unit: "%", cls: "series-c" }),
    mem: new TimeChart(box, { title: "Dataflow memory", name: "memory", format: fmtBytes, cls: "series-d" }),
  };
}

function applyStatus(v) {
  const { df, log, models } = v;
  const ing = ingestionWord(v);
  setPill("#st-ingestion", ing, ing);
  setText("#st-dataflow", v.running ? `dataflow running · ingestion ${df.ingestion}${df.pid ? ` · pid ${df.pid}` : ""}` : `dataflow ${df.state || "not running"}`);
  const ref = refreshWord(v);
  setPill("#st-refresh", ref, ref);
  setText(
    "#st-refresh-rate",
    df.refresh_queue === null || df.refresh_queue === undefined
      ? "no refresh step reported"
      : `queue ${fmtInt(df.refresh_queue)} · ${fmtNum(df.refreshes_per_s, 2)} refreshes/s`,
  );
  setText("#st-eps", v.running ? fmtNum(df.events_per_s, 1) : "0");
  setText("#st-events-in", `${fmtInt(df.events_in)} events in since start`);
  setText("#st-backlog", fmtInt(df.backlog));
  setText("#st-lag", `events not yet folded · lag ${fmtDuration(df.lag_s)}`);
  const lastTs = df.last_event_at ?? log.last_event_at;
  setText("#st-last-event", fmtTime(lastTs));
  setText("#st-last-seq", `seq ${fmtInt(log.last_seq ?? df.last_seq)} · ${fmtAgo(lastTs)}`);
  setText("#st-model", df.model_version ?? models.hgt ?? "none");
  setText("#st-fusion", `fusion ${models.fusion ?? "none"}`);
  setText("#st-device", df.device ?? "–");
  setText("#st-workers", `workers ${df.workers ?? "–"}`);
  setText("#st-dead", fmtInt(log.dead_letters ?? df.dead_letters));
  setText("#st-updated", `status ${df.updated_at ? fmtAgo(df.updated_at) : "–"}`);
  document.body.dataset.ingestion = ing;
  if (v.running) {
    charts.eps.push(df.events_per_s);
    charts.queue.push(df.refresh_queue);
  }
}

function applyMetrics(m) {
  const p = m?.processes?.dataflow || m?.processes?.api;
  if (!p) return;
  charts.cpu.title = m.processes.dataflow ? "Dataflow CPU" : "API CPU";
  charts.mem.title = m.processes.dataflow ? "Dataflow memory (RSS)" : "API memory (RSS)";
  charts.cpu.push(p.cpu_percent);
  charts.mem.push(p.rss_bytes);
}

async function loadJobs() {
  const jobs = await api("/jobs", { query: { limit: 10 } });
  renderJobs($("#jobs-table tbody"), jobs);
}

function refreshForm() {
  const form = $("#refresh-form");
  const { graph_scope: scope, sample_ratio: ratio, mode, epochs } = form.elements;
  const sync = () => {
    ratio.disabled = scope.value !== "sampled";
    if (scope.value === "sampled" && Number(ratio.value) >= 1) ratio.value = "0.3";
    epochs.disabled = mode.value !== "full_retrain";
  };
  scope.addEventListener("change", sync);
  mode.addEventListener("change", sync);
  sync();
  jobForm(form, { path: "/graph/refresh", box: $("#refresh-job"), title: "Full refresh", onDone: () => loadJobs().catch(() => {}) });
}

boot(async () => {
  charts = makeCharts();
  refreshForm();
  live.on("metrics", applyMetrics);
  live.on("job", throttle(() => loadJobs().catch(() => {}), 1500));
  await Promise.all([new StatusView(applyStatus).start(), loadJobs()]);
});
