// Data configuration: the live generator's rate and delay (applied to the running flow), the dataset's
// sizes with the API's validation next to each field, and regenerate (confirmed) with job progress.
import {
  $, api, boot, clearErrors, confirmAction, fillKV, fmtDuration, fmtTime, fmtValue, followJob, h, isNum, live, showError, toast,
} from "./console.js";

const LIVE = ["live_rate", "live_delay"];

/** Labels and hints for the fields the API reports; fields not listed here are shown by their key. */
const LABELS = {
  users: ["Users", "subscribers in the dataset"],
  products: ["Products", "telecom products users order and click"],
  apps: ["Apps", "includes the competitor-carrier apps the planted churn signal uses"],
  events_per_user: ["Events per user", "mean history events per user (calls, orders, clicks, app use)"],
  history_days: ["History (days)", "length of the generated history"],
  community_size: ["Community size", "mean size of call-graph communities; most calls stay inside one"],
  label_share: ["Labelled share", "share of users with an observed outcome (trains and measures the fusion layer)"],
  new_user_share: ["New-user share", "share of live events that register a new user"],
  seed: ["Seed", "same seed, same dataset"],
  locale: ["Faker locale", "zh_CN gives Chinese names, cities and plans"],
  calls_per_user: ["Calls per user", "user–calls–user edges each user has in the history (min – max)"],
  orders_per_user: ["Product orders per user", "user–orders–product edges each user has (min – max)"],
  product_clicks_per_user: ["Product clicks per user", "user–clicks–product edges each user has (min – max)"],
  app_uses_per_user: ["App uses per user", "user–uses–app edges each user has (min – max)"],
  app_clicks_per_user: ["App clicks per user", "user–clicks–app edges each user has (min – max)"],
};

const isRange = (v) => v !== null && typeof v === "object" && "min" in v && "max" in v;
/** "2 – 6", "2 – no limit" */
const fmtRange = (r) => `${r.min ?? "–"} – ${r.max ?? "no limit"}`;

let current = null;

function numberInput(name, value) {
  const integer = Number.isInteger(value) && !["label_share", "new_user_share"].includes(name);
  return h("input", { name, id: `cfg-${name}`, type: "number", step: integer ? "1" : "any", value: String(value) });
}

/** A min/max pair (per-user edge ranges: {min, max} objects; max null is no limit, an empty field). */
function rangeInputs(name, value) {
  const part = (which, placeholder) =>
    h("input", {
      name: `${name}.${which}`, id: `cfg-${name}-${which}`, type: "number", step: "1", min: "0", placeholder,
      value: value[which] === null || value[which] === undefined ? "" : String(value[which]), "aria-label": `${name} ${which}`,
    });
  return h("span", { class: "range" }, part("min", "0"), " – ", part("max", "no limit"));
}

function renderDataset(cfg) {
  const form = $("#dataset-form");
  const fields = Object.entries(cfg).filter(([k]) => !LIVE.includes(k));
  form.replaceChildren(
    ...fields.map(([k, v]) => {
      const [label, hint] = LABELS[k] || [k.replaceAll("_", " "), ""];
      let input;
      if (isRange(v)) input = rangeInputs(k, v);
      else if (isNum(v)) input = numberInput(k, v);
      else input = h("input", { name: k, id: `cfg-${k}`, value: String(v ?? ""), spellcheck: "false" });
      return h("label", {}, label, input, hint ? h("span", { class: "hint" }, hint) : null, h("span", { class: "field-error", "data-error-for": k }));
    }),
    h("div", { class: "form-error", "data-error-for": "_form" }),
    h(
      "div",
      { class: "form-actions" },
      h("button", { type: "button", class: "btn-secondary", id: "dataset-save" }, "Save settings"),
      h("button", { type: "submit", class: "btn-danger", id: "regenerate" }, "Regenerate dataset…"),
    ),
  );
  $("#dataset-save").addEventListener("click", () => saveDataset(false));
}

/** The dataset form's values as a patch ({field: value}, ranges as {min, max}) of what changed. */
function datasetPatch() {
  const form = $("#dataset-form");
  const patch = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    const [key, part] = el.name.split(".");
    const raw = el.value.trim();
    const val = el.type === "number" ? (raw === "" ? null : Number(raw)) : raw;
    if (part) patch[key] = { ...(patch[key] || current[key]), [part]: val };
    else patch[key] = val;
  }
  for (const [k, v] of Object.entries(patch)) if (JSON.stringify(v) === JSON.stringify(current[k])) delete patch[k];
  return patch;
}

async function saveDataset(regenerate) {
  const form = $("#dataset-form");
  clearErrors(form);
  const patch = datasetPatch();
  try {
    if (regenerate) {
      const ok = await confirmAction(
        "Regenerate the dataset?",
        `A fresh mock dataset${Object.keys(patch).length ? ` (${Object.entries(patch).map(([k, v]) => `${k} ${isRange(v) ? fmtRange(v) : fmtValue(v)}`).join(", ")})` : ""} is written to a new database file with an initial model, and the running system switches to it. The current file is kept.`,
        "Regenerate",
      );
      if (!ok) return;
      const job = await api("/data/regenerate", { method: "POST", body: patch });
      toast(`regenerate job ${job.id} started`);
      await followJob($("#regen-job"), job, { title: "Regenerate", onDone: () => load().catch(() => {}) });
    } else {
      if (!Object.keys(patch).length) {
        toast("nothing changed");
        return;
      }
      const res = await api("/data/config", { method: "POST", body: patch });
      toast(`settings saved (${res.source}); they apply to the next regenerate`);
      show(res);
    }
  } catch (err) {
    showError(form, err);
  }
}

function show(doc) {
  current = doc.config;
  const live = $("#live-form");
  for (const k of LIVE) if (k in current) live.elements[k].value = String(current[k]);
  renderDataset(current);
  $("#db-table").dataset.source = doc.source;
}

async function loadDatabase() {
  const [st, stats] = await Promise.all([api("/operations/status"), api("/jobs", { query: { kind: "data.regenerate", limit: 1 } })]);
  const rows = [
    ["database file", st.api?.db],
    ["events in the log", st.log?.last_seq],
    ["last event", fmtTime(st.log?.last_event_at)],
    ["dead letters", st.log?.dead_letters],
    ["models", `HGT ${st.models?.hgt ?? "none"} · fusion ${st.models?.fusion ?? "none"}`],
    ["settings from", $("#db-table").dataset.source || "–"],
  ];
  const last = stats.jobs?.[0];
  if (last) rows.push(["last regenerate", `${last.state}${isNum(last.duration_s) ? ` in ${fmtDuration(last.duration_s)}` : ""}`]);
  fillKV($("#db-table tbody"), rows);
}

async function load() {
  show(await api("/data/config"));
  await loadDatabase();
}

function liveForm() {
  const form = $("#live-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const body = {};
    for (const k of LIVE) {
      const raw = form.elements[k].value.trim();
      body[k] = raw === "" ? null : Number(raw);
    }
    const box = $("#live-result");
    $("#live-submit").disabled = true;
    try {
      const res = await api("/data/config", { method: "POST", body });
      current = res.config;
      box.hidden = false;
      const cmd = res.live;
      box.className = `notice notice-${!cmd ? "info" : cmd.state === "applied" ? "ok" : cmd.state === "pending" ? "warn" : "error"}`;
      box.textContent = !cmd
        ? `rate ${res.config.live_rate}/s, delay ${res.config.live_delay} s (unchanged)`
        : `rate ${res.config.live_rate}/s, delay ${res.config.live_delay} s — ${cmd.state}${cmd.effect ? `: ${cmd.effect}` : ""}${cmd.message ? ` (${cmd.message})` : ""}`;
    } catch (err) {
      showError(form, err);
    } finally {
      $("#live-submit").disabled = false;
    }
  });
}

boot(async () => {
  liveForm();
  $("#dataset-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    saveDataset(true);
  });
  live.on("op", (op) => {
    if (op?.command === "db.switch") load().catch(() => {});
  });
  await load();
});
