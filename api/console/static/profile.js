// User profile: lookup, base attributes and event counts, fused score figures, SHAP chart, rule hits,
// recommendations.
import { barChart, divergingChart } from "./charts.js";
import { $, $$, ApiError, api, boot, fillKV, fmtAgo, fmtNum, fmtScore, fmtTime, h, isNum, setText } from "./console.js";

const BASE_FIELDS = [
  ["name", "name"],
  ["gender", "gender"],
  ["age", "age"],
  ["city", "city"],
  ["plan_type", "plan type"],
  ["level", "level"],
  ["device_brand", "device brand"],
  ["monthly_fee", "monthly fee"],
  ["tenure_months", "tenure (months)"],
  ["registered", "registered"],
  ["total_events", "total events"],
  ["call_partners", "distinct call partners"],
  ["call_duration", "call duration (s)"],
  ["app_duration", "app usage (s)"],
  ["spend", "spend on orders"],
  ["first_event_at", "first event"],
  ["last_event_at", "last event"],
];

const view = { userId: null, mode: "per_dimension", topK: 5, seq: 0 };

function showNotFound(text) {
  const box = $("#not-found");
  box.textContent = text;
  box.hidden = false;
  $("#profile-body").hidden = true;
}

function profileOf(doc) {
  // /user/{id} may wrap the profile with its score: {profile: {...}, score: {...}} or be the profile itself
  return doc?.profile && typeof doc.profile === "object" ? doc.profile : doc;
}

function renderProfile(doc) {
  const p = profileOf(doc);
  setText("#profile-title", `${p.user_id ?? view.userId}${p.name ? ` · ${p.name}` : ""}`);
  const rows = BASE_FIELDS.filter(([k]) => k in p).map(([k, label]) => {
    let v = p[k];
    if (k.endsWith("_at")) v = v ? `${fmtTime(v)} (${fmtAgo(v)})` : "–";
    return [label, v, isNum(p[k]) ? "num" : ""];
  });
  fillKV($("#base-table tbody"), rows);
  const counts = Object.entries(p.event_counts || {}).sort((a, b) => b[1] - a[1]);
  $("#counts-table tbody").replaceChildren(
    ...(counts.length
      ? counts.map(([t, n]) => h("tr", {}, h("td", {}, t), h("td", { class: "num" }, fmtNum(n))))
      : [h("tr", {}, h("td", { colspan: 2, class: "hint" }, "no behaviour events yet"))]),
  );
  if (counts.length) barChart($("#counts-chart"), counts.map(([label, value]) => ({ label, value })), { format: (v) => fmtNum(v) });
  else $("#counts-chart").replaceChildren();
}

function renderScore(sc) {
  if (!sc) return;
  setText("#fig-score", fmtScore(sc.score));
  setText("#fig-gate", fmtScore(sc.gate));
  setText("#fig-rule", fmtScore(sc.f_rule));
  if (isNum(sc.f_rule_calibrated)) setText("#fig-rule-sub", `sum of fired weights · calibrated ${fmtScore(sc.f_rule_calibrated)}`);
  setText("#fig-nn", fmtScore(sc.f_nn));
  setText("#fig-versions", `embedding from HGT model ${sc.model_version ?? "–"} · fusion model ${sc.fusion_version ?? "untrained"} · rules version ${sc.rules_version ?? "–"}`);
  const note = $("#embedding-note");
  note.hidden = !sc.embedding_missing;
  note.textContent = sc.embedding_missing
    ? "This user has no call-neighbourhood embedding yet (a new user the refresh loop has not reached), so the GNN score " +
      `does not come from the graph for now; it will once the incremental refresh has embedded this user and their neighbourhood.${sc.embedding_note ? ` (${sc.embedding_note})` : ""}`
    : "";
  if (Array.isArray(sc.rules)) renderRuleHits(sc.rules);
  $("#profile-body").dataset.score = isNum(sc.score) ? String(sc.score) : "";
}

function renderRuleHits(rules) {
  const body = $("#rules-table tbody");
  if (!rules.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "hint" }, "no rules defined")));
    return;
  }
  const sorted = [...rules].sort((a, b) => Number(Boolean(b.fired)) - Number(Boolean(a.fired)) || String(a.name).localeCompare(String(b.name)));
  body.replaceChildren(
    ...sorted.map((r) =>
      h(
        "tr",
        { class: r.error ? "row-error" : r.fired ? "row-hit" : "", dataset: { rule: r.name } },
        h("td", {}, h("code", {}, r.name)),
        h("td", {}, r.error ? h("span", { class: "pill pill-bad" }, "error") : r.fired ? h("span", { class: "pill pill-ok" }, "fired") : h("span", { class: "pill pill-muted" }, "no")),
        h("td", { class: "num" }, fmtNum(r.weight)),
        h("td", { class: "wrap" }, r.error || r.description || ""),
      ),
    ),
  );
}

function renderRecommendations(doc) {
  const list = Array.isArray(doc) ? doc : doc?.recommendations || [];
  const ol = $("#recommendations");
  if (!list.length) {
    ol.replaceChildren(h("li", { class: "hint" }, "no recommendation for this user"));
    return;
  }
  ol.replaceChildren(
    ...list.map((r) =>
      h(
        "li",
        { class: "rec" },
        h("div", { class: "rec-head" }, h("strong", {}, r.title || r.strategy), " ", h("span", { class: "pill pill-muted" }, r.strategy), isNum(r.priority) ? h("span", { class: "rec-prio" }, `priority ${r.priority}`) : null),
        h("div", { class: "rec-reason" }, r.reason || ""),
      ),
    ),
  );
}

function shapItems(ex) {
  const pos = (ex.top_positive || []).filter((c) => isNum(c.value));
  const neg = (ex.top_negative || []).filter((c) => isNum(c.value));
  let items = [...pos.sort((a, b) => b.value - a.value), ...neg.sort((a, b) => b.value - a.value)];
  if (!items.length && Array.isArray(ex.contributions)) {
    // no top lists: take the K largest of each sign from the full vector
    const all = ex.contributions.filter((c) => isNum(c.value));
    const p = all.filter((c) => c.value > 0).sort((a, b) => b.value - a.value).slice(0, view.topK);
    const n = all.filter((c) => c.value < 0).sort((a, b) => a.value - b.value).slice(0, view.topK).reverse();
    items = [...p, ...n];
  }
  return items.map((c) => ({ label: c.label || c.feature, feature: c.feature, value: c.value, text: c.text }));
}

/** One sentence per top contribution, in the chart's order ("monthly fee 58 (average 142) lowers …"). */
function renderSentences(items) {
  $("#shap-sentences").replaceChildren(
    ...items.filter((c) => c.text).map((c) => h("li", { class: c.value >= 0 ? "pos" : "neg", "data-feature": c.feature }, c.text)),
  );
}

async function loadExplanation(seq) {
  const status = $("#shap-status");
  status.textContent = "computing the explanation (Kernel SHAP)…";
  $("#shap-chart").setAttribute("aria-busy", "true");
  try {
    const ex = await api(`/explain/${encodeURIComponent(view.userId)}`, { query: { mode: view.mode, top_k: view.topK } });
    if (seq !== view.seq) return;
    renderScore(ex);
    const items = shapItems(ex);
    if (items.length) divergingChart($("#shap-chart"), items);
    else $("#shap-chart").replaceChildren(h("p", { class: "hint" }, "every contribution is zero for this user"));
    renderSentences(items);
    $("#shap-chart").dataset.mode = view.mode;
    const sum = (ex.contributions || []).reduce((a, c) => a + (isNum(c.value) ? c.value : 0), 0);
    setText(
      "#shap-meta",
      `base value ${fmtScore(ex.base_value)} + contributions ${sum >= 0 ? "+" : ""}${fmtNum(sum, 3)} ≈ score ${fmtScore(ex.score)}` +
        `${isNum(ex.background?.size) ? ` · background ${ex.background.size} users (${ex.background.source})` : ""}` +
        `${ex.exact ? " · exact" : isNum(ex.nsamples) ? ` · ${ex.nsamples} samples` : ""}${ex.cached ? " · from cache" : ""}` +
        ` · ${view.mode === "grouped" ? "grouped (each rule, profile numbers, call neighbourhood)" : "per dimension"}, top ${view.topK} each way`,
    );
    status.textContent = "";
  } catch (err) {
    if (seq !== view.seq) return;
    status.textContent = `explanation unavailable: ${err.message}`;
    $("#shap-chart").replaceChildren();
    $("#shap-sentences").replaceChildren();
  } finally {
    $("#shap-chart").removeAttribute("aria-busy");
  }
}

async function lookup(userId) {
  const uid = userId.trim();
  if (!uid) {
    $("#lookup-status").textContent = "enter a user id";
    return;
  }
  view.userId = uid;
  view.seq += 1;
  const seq = view.seq;
  $("#user-id").value = uid;
  $("#not-found").hidden = true;
  $("#lookup-status").textContent = "loading…";
  const url = new URL(window.location.href);
  url.searchParams.set("user", uid);
  window.history.replaceState(null, "", url);
  let doc;
  try {
    doc = await api(`/user/${encodeURIComponent(uid)}`);
  } catch (err) {
    if (seq !== view.seq) return;
    $("#lookup-status").textContent = "";
    if (err instanceof ApiError && err.status === 404) showNotFound(`User “${uid}” not found. ${err.message}`);
    else showNotFound(`Could not load user “${uid}”: ${err.message}`);
    return;
  }
  if (seq !== view.seq) return;
  $("#profile-body").hidden = false;
  $("#profile-body").dataset.user = uid;
  renderProfile(doc);
  renderScore(doc?.score && typeof doc.score === "object" ? doc.score : null);
  const unavailable = $("#score-unavailable");
  unavailable.hidden = !doc?.score_unavailable;
  unavailable.textContent = doc?.score_unavailable ? `No score yet: ${doc.score_unavailable}` : "";
  $("#lookup-status").textContent = "";
  await Promise.all([
    loadExplanation(seq),
    api(`/recommendation/${encodeURIComponent(uid)}`)
      .then((r) => seq === view.seq && renderRecommendations(r))
      .catch((err) => seq === view.seq && $("#recommendations").replaceChildren(h("li", { class: "hint" }, err.message))),
  ]);
}

async function randomUser() {
  const resp = await fetch(`${document.body.dataset.prefix}/random-user`, { headers: { Accept: "application/json" } });
  const doc = await resp.json();
  if (!resp.ok) throw new Error(doc.message || `HTTP ${resp.status}`);
  return doc.user_id;
}

boot(async () => {
  $("#lookup-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    lookup($("#user-id").value);
  });
  $("#random-user").addEventListener("click", async () => {
    try {
      await lookup(await randomUser());
    } catch (err) {
      $("#lookup-status").textContent = `no random user: ${err.message}`;
    }
  });
  for (const b of $$(".segmented button")) {
    b.addEventListener("click", () => {
      view.mode = b.dataset.mode;
      for (const o of $$(".segmented button")) {
        o.classList.toggle("active", o === b);
        o.setAttribute("aria-pressed", String(o === b));
      }
      if (view.userId) loadExplanation(view.seq);
    });
  }
  $("#top-k").addEventListener("change", (ev) => {
    view.topK = Number(ev.target.value);
    if (view.userId) loadExplanation(view.seq);
  });
  const initial = new URLSearchParams(window.location.search).get("user");
  if (initial) await lookup(initial);
  else $("#user-id").focus();
});
