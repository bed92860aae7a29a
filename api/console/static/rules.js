// Rules: list, create, edit, delete; the API's validation message beside the field; a preview of how
// many sampled users a condition fires for, before saving.
import { $, ApiError, api, boot, clearErrors, confirmAction, fmtNum, formValues, h, live, showError, throttle, toast } from "./console.js";

const state = { editing: null, previewSeq: 0 };
const previewSoon = throttle(() => preview(), 700);

function rulesOf(doc) {
  return Array.isArray(doc) ? doc : doc?.rules || doc?.items || [];
}

async function loadRules() {
  const doc = await api("/rules");
  const rules = rulesOf(doc);
  const version = doc?.version ?? doc?.rules_version;
  $("#rules-version").textContent = version !== undefined ? `version ${version} · ${rules.length} rules` : `${rules.length} rules`;
  const body = $("#rules-list tbody");
  if (!rules.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "hint" }, "no rules yet — create one on the right")));
    return;
  }
  body.replaceChildren(
    ...rules.map((r) =>
      h(
        "tr",
        { dataset: { rule: r.name } },
        h("td", {}, h("code", {}, r.name), r.description ? h("div", { class: "hint" }, r.description) : null),
        h("td", { class: "wrap" }, h("code", {}, r.condition)),
        h("td", { class: "num" }, fmtNum(r.weight)),
        h("td", {}, r.enabled === false ? h("span", { class: "pill pill-warn" }, "off") : h("span", { class: "pill pill-ok" }, "on")),
        h(
          "td",
          { class: "actions" },
          h("button", { type: "button", class: "btn-small btn-secondary", "data-action": "edit", onclick: () => edit(r) }, "Edit"),
          h("button", { type: "button", class: "btn-small btn-danger", "data-action": "delete", onclick: () => remove(r) }, "Delete"),
        ),
      ),
    ),
  );
}

function edit(rule) {
  const form = $("#rule-form");
  clearErrors(form);
  state.editing = rule ? rule.name : null;
  form.elements.name.value = rule?.name ?? "";
  form.elements.name.readOnly = Boolean(rule);
  form.elements.description.value = rule?.description ?? "";
  form.elements.condition.value = rule?.condition ?? "";
  form.elements.weight.value = rule?.weight ?? 1.0;
  form.elements.enabled.checked = rule ? rule.enabled !== false : true;
  $("#rule-form-title").textContent = rule ? `Edit rule ${rule.name}` : "New rule";
  $("#rule-save").textContent = rule ? "Save changes" : "Create rule";
  $("#rule-cancel").hidden = !rule;
  $("#rule-preview").replaceChildren();
  if (rule) preview();
  form.elements[rule ? "condition" : "name"].focus();
}

async function remove(rule) {
  const ok = await confirmAction(`Delete rule ${rule.name}?`, `The rule “${rule.name}” (${rule.condition}) stops counting in every score. The deletion is recorded in the event log.`, "Delete rule");
  if (!ok) return;
  try {
    await api(`/rules/${encodeURIComponent(rule.name)}`, { method: "DELETE" });
    toast(`rule ${rule.name} deleted`);
    if (state.editing === rule.name) edit(null);
    await loadRules();
  } catch (err) {
    toast(err.message, "error");
  }
}

/** Where a message without a named field belongs: rule compile errors are about the condition. */
function guessField(err) {
  const m = String(err.message).toLowerCase();
  if (err.status === 409 || /\bname\b/.test(m)) return "name";
  if (/\bweight\b/.test(m)) return "weight";
  return "condition";
}

async function preview() {
  const form = $("#rule-form");
  const condition = form.elements.condition.value.trim();
  const box = $("#rule-preview");
  const seq = ++state.previewSeq;
  if (!condition) {
    box.replaceChildren();
    return;
  }
  box.replaceChildren(h("span", { class: "hint" }, "previewing on a sample of users…"));
  try {
    const res = await api("/rules/preview", { method: "POST", body: { condition } });
    if (seq !== state.previewSeq) return;
    const fired = Number(res.fired);
    const sample = Number(res.sample);
    const share = sample ? (100 * fired) / sample : 0;
    const errors = Number(res.errors || 0);
    box.replaceChildren(
      h("div", { class: "preview-bar", role: "img", "aria-label": `${share.toFixed(0)} percent` }, h("div", { class: "preview-fill" })),
      h("span", { class: "preview-text" }, `fires for ${fmtNum(fired)} of ${fmtNum(sample)} sampled users (${share.toFixed(1)} %)`),
      ...(errors ? [h("span", { class: "pill pill-warn", title: (res.error_examples || []).map((e) => e.error).join("\n") }, `${errors} evaluation errors`)] : []),
    );
    box.querySelector(".preview-fill").style.width = `${Math.min(100, share)}%`;
    box.dataset.fired = String(fired);
    box.dataset.sample = String(sample);
    $('[data-error-for="condition"]', form).textContent = "";
    form.elements.condition.classList.remove("invalid");
  } catch (err) {
    if (seq !== state.previewSeq) return;
    box.replaceChildren();
    delete box.dataset.fired;
    if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 404) {
      $('[data-error-for="condition"]', form).textContent = err.message;
      form.elements.condition.classList.add("invalid");
    } else {
      box.replaceChildren(h("span", { class: "hint" }, `preview unavailable: ${err.message}`));
    }
  }
}

async function save(ev) {
  ev.preventDefault();
  const form = $("#rule-form");
  clearErrors(form);
  // the save's answer is the word on this condition: drop previews still on their way
  previewSoon.cancel();
  state.previewSeq += 1;
  const spec = formValues(form);
  const button = $("#rule-save");
  button.disabled = true;
  try {
    if (state.editing) {
      const { name, ...rest } = spec;
      await api(`/rules/${encodeURIComponent(state.editing)}`, { method: "PUT", body: rest });
      toast(`rule ${state.editing} saved`);
    } else {
      await api("/rules", { method: "POST", body: spec });
      toast(`rule ${spec.name} created`);
    }
    edit(null);
    await loadRules();
  } catch (err) {
    showError(form, err, guessField);
  } finally {
    button.disabled = false;
  }
}

boot(async () => {
  const form = $("#rule-form");
  form.addEventListener("submit", save);
  $("#rule-preview-button").addEventListener("click", preview);
  form.elements.condition.addEventListener("input", previewSoon);
  $("#rule-cancel").addEventListener("click", () => edit(null));
  $("#new-rule").addEventListener("click", () => edit(null));
  // another console (or the API) changed the rules: show the new list
  live.on("rules", throttle(() => loadRules().catch(() => {}), 1000));
  await loadRules();
});
