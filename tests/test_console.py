"""The web console in headless Chromium against the real system (``ups up``: dataflow + API) on 127.0.0.1
with a small dataset. What is checked is what an operator would look at on the pages, compared with what
the API itself answers. Screenshots of every page go to test-artifacts/console/."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
from playwright import sync_api as playwright_sync
from playwright.sync_api import expect

from api_support import SYSTEM, needs
from console_harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    PageLog,
    Server,
    http,
    screenshot,
    ups_api,
    ups_up,
)
from dataflow.generator import user_id

# `ups up` needs the dataflow and the graph training for its initial model
needs(*SYSTEM)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Waits are on what the page shows (expect, the page's data-ready, the API's acknowledgement), never fixed
# sleeps, with room for a loaded machine: the suite shares two cores with other test runs.
TIMEOUT_MS = 45_000
expect.set_options(timeout=TIMEOUT_MS)


PAGES = ["overview", "profile", "rules", "operations", "data"]
SCORE = re.compile(r"^\d\.\d{3}$")  # probabilities
NUMBER = re.compile(r"^-?\d+\.\d{3}$")
CJK = re.compile(r"[\u4e00-\u9fff]")
#: a user of the generated dataset (ids are deterministic)
USER = user_id(7)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = ups_up(tmp_path_factory.mktemp("console") / "ups.db").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: apt-get install -y chromium (.ci/run does this)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def open_page(context: Any, url: str) -> tuple[Any, PageLog]:
    """A console page once it has loaded its data and wired its controls (body[data-ready])."""
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    page.goto(url)
    wait_ready(page)
    return page, log


def wait_ready(page: Any) -> None:
    body = page.locator("body")
    expect(body).to_have_attribute("data-ready", re.compile(r"^(true|error)$"), timeout=120_000)
    assert body.get_attribute("data-ready") == "true", page.locator("#toasts").all_inner_texts()


#: an attribute holding a count of at least 2 / 3
AT_LEAST_2 = re.compile(r"^([2-9]|\d{2,})$")
AT_LEAST_3 = re.compile(r"^([3-9]|\d{2,})$")
#: a command the API took: applied by the flow, or pending while a loaded flow has not acknowledged it yet
ACCEPTED = re.compile(r"— (applied|pending)")


def api_get(system: Server, path: str) -> Any:
    status, body = http("GET", f"{system.url}/api/v1{path}")
    assert status == 200, (path, status, body)
    return body


def wait_for(check: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def scored_user(system: Server, uid: str) -> dict[str, Any]:
    """The user's document once the flow has folded them and a model scores them."""

    def ready() -> dict[str, Any] | None:
        status, doc = http("GET", f"{system.url}/api/v1/user/{uid}")
        return doc if status == 200 and doc.get("score") else None

    return wait_for(ready, 120, f"{uid} to be scored")


def settled_score(system: Server, uid: str) -> float:
    """The user's score once two readings a second and a half apart agree."""

    def settled() -> float | None:
        first = http("GET", f"{system.url}/api/v1/user/{uid}")[1]["score"]["score"]
        time.sleep(1.5)
        second = http("GET", f"{system.url}/api/v1/user/{uid}")[1]["score"]["score"]
        return float(first) if first == second else None

    return float(wait_for(settled, 60, f"{uid}'s score to settle"))


def figure(page: Any, sel: str) -> float:
    return float(page.locator(sel).inner_text())


def set_flow(system: Server, ingestion: str, incremental: str) -> None:
    for what, action in (("ingestion", ingestion), ("incremental", incremental)):
        status, body = http("POST", f"{system.url}/api/v1/operations/{what}/{action}")
        assert status == 200 and body["state"] == "applied", body


# --------------------------------------------------------------------------- every page


@pytest.mark.parametrize("name", PAGES)
def test_every_page_loads_without_console_errors(system: Server, context: Any, name: str) -> None:
    page, log = open_page(context, f"{system.url}/console/{name}")
    expect(page.locator("h1")).to_be_visible()
    expect(page.locator("nav a.active")).to_have_attribute("href", f"/console/{name}")
    expect(page.locator("#live-indicator")).to_have_text("live")
    if name == "overview":
        expect(page.locator("#st-ingestion")).to_have_text("running")
        expect(page.locator("#st-device")).to_have_text(api_get(system, "/operations/status")["dataflow"]["device"] or "–")
        # the charts move by themselves: points arrive from the stream without a reload, CPU and memory
        # of the dataflow included (the stream's metrics events)
        expect(page.locator("#overview-charts figure").first).to_have_attribute("data-points", AT_LEAST_2)
        expect(page.locator("#overview-charts [data-chart=cpu]")).to_have_attribute("data-points", AT_LEAST_2)
        expect(page.locator("#overview-charts [data-chart=memory]")).to_have_attribute("data-points", AT_LEAST_2)
    elif name == "profile":
        expect(page.locator("#user-id")).to_be_focused()
    elif name == "rules":
        rules = api_get(system, "/rules")["rules"]
        expect(page.locator("#rules-list tbody tr")).to_have_count(max(1, len(rules)))
        for r in rules:
            expect(page.locator(f'#rules-list tr[data-rule="{r["name"]}"]')).to_contain_text(r["condition"])
    elif name == "operations":
        expect(page.locator("#status-table")).to_contain_text("running")
        expect(page.locator("#ctl-ingestion")).to_have_text("running")
        for chart in ("api-cpu", "api-memory", "dataflow-cpu", "dataflow-memory"):
            expect(page.locator(f"#ops-charts [data-chart={chart}]")).to_have_attribute("data-points", AT_LEAST_2)
    elif name == "data":
        cfg = api_get(system, "/data/config")["config"]
        expect(page.locator("#cfg-users")).to_have_value(str(cfg["users"]))
        expect(page.locator("#live-form [name=live_rate]")).to_have_value(re.compile(rf"^{cfg['live_rate']:g}"))
    # let stream events land before judging the console: a few metrics events (one every 2 s)
    expect(page.locator("body")).to_have_attribute("data-live-metrics", AT_LEAST_3)
    screenshot(page, name)
    assert not [u for u in log.requests if "/operations/metrics" in u], "metrics come from the stream, not polls"
    assert log.unexpected_errors() == []
    assert log.foreign_hosts() == set(), "the console must not load anything from outside the server"


def test_ten_tabs_all_load_and_keep_updating(system: Server, context: Any) -> None:
    """Browsers allow six HTTP/1.1 connections per host: the tabs share one event stream, so ten of them
    (two of every page) all load, show "live" and keep receiving events."""
    tabs: list[tuple[str, Any, PageLog]] = []
    for name in PAGES * 2:
        page = context.new_page()
        log = PageLog()
        log.attach(page)
        page.goto(f"{system.url}/console/{name}")
        tabs.append((name, page, log))
    for name, page, _ in tabs:
        wait_ready(page)
        expect(page.locator("#live-indicator")).to_have_text("live")
        if name == "data":  # the page the seventh tab never finished: its current database filled in
            expect(page.locator("#cfg-users")).to_have_value(str(api_get(system, "/data/config")["config"]["users"]))
    # and they all keep updating: each tab counts the stream's metrics events (one every second here)
    marks = [int(page.locator("body").get_attribute("data-live-metrics") or 0) for _, page, _ in tabs]
    for (name, page, log), mark in zip(tabs, marks):
        wait_for(lambda: int(page.locator("body").get_attribute("data-live-metrics") or 0) >= mark + 2, 60,
                 f"two more metrics events on the {name} tab")
        assert log.unexpected_errors() == [], name
    screenshot(tabs[-1][1], "ten-tabs-data")


def test_openapi_ui_renders_without_internet(system: Server, browser: Any) -> None:
    """Every request to anywhere but this server is refused: Swagger UI still renders the API."""
    ctx = browser.new_context(viewport=VIEWPORT)
    blocked: list[str] = []

    def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    try:
        ctx.route("**/*", only_loopback)
        page = ctx.new_page()
        page.goto(f"{system.url}/schema/swagger")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("UPS API")
        expect(page.locator(".opblock-summary-path", has_text="/api/v1/graph/statistics")).to_be_visible()
        assert page.locator(".opblock").count() >= 20
        screenshot(page, "openapi-offline")
        assert blocked == [], "the OpenAPI UI reached outside the server"
    finally:
        ctx.close()


#: families that draw Chinese (what the console's font stack names, on Linux, macOS and Windows)
CJK_FAMILIES = re.compile(r"CJK|WenQuanYi|Source Han|PingFang|Hiragino|YaHei", re.I)


def test_chinese_text_renders_with_a_cjk_font(system: Server, context: Any) -> None:
    """The glyphs of a Chinese value come from a CJK font (no empty boxes), as Chromium reports the fonts it
    drew a node with."""
    scored_user(system, USER)
    page, log = open_page(context, f"{system.url}/console/profile?user={USER}")
    cell = page.locator("#base-table tr", has_text="city").locator("td")
    expect(cell).to_have_text(CJK)
    text = cell.inner_text()
    family = cell.evaluate("el => getComputedStyle(el).fontFamily")
    assert "Noto Sans CJK SC" in family and "WenQuanYi" in family and "Microsoft YaHei" in family, family
    cell.evaluate("el => el.setAttribute('data-font-probe', '1')")
    cdp = context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "[data-font-probe]"})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    cjk_glyphs = sum(f["glyphCount"] for f in fonts if CJK_FAMILIES.search(f["familyName"]))
    assert cjk_glyphs >= len(CJK.findall(text)) > 0, (text, fonts)
    screenshot(page, "profile-chinese")
    assert log.unexpected_errors() == []


# --------------------------------------------------------------------------- user profile


def test_user_query_shows_figures_and_shap_chart(system: Server, context: Any) -> None:
    scored_user(system, USER)
    page, log = open_page(context, f"{system.url}/console/profile")
    page.fill("#user-id", USER)
    # the page must show exactly what the API answered it (live events move the user's figures meanwhile)
    with page.expect_response(lambda r: "/api/v1/user/" in r.url) as user_resp, page.expect_response(
        lambda r: "/api/v1/explain/" in r.url, timeout=90_000
    ) as explain_resp, page.expect_response(lambda r: "/api/v1/recommendation/" in r.url) as rec_resp:
        page.click("#lookup-button")
    doc, ex, recs = user_resp.value.json(), explain_resp.value.json(), rec_resp.value.json()["recommendations"]
    expect(page.locator("#shap-chart")).to_have_attribute("data-mode", "per_dimension")
    for sel, key in (("#fig-score", "score"), ("#fig-gate", "gate"), ("#fig-nn", "f_nn")):
        expect(page.locator(sel)).to_have_text(SCORE)
        expect(page.locator(sel)).to_have_text(f"{ex[key]:.3f}")
    expect(page.locator("#fig-rule")).to_have_text(f"{ex['f_rule']:.3f}")
    assert 0 <= ex["score"] <= 1 and abs(ex["score"] - doc["score"]["score"]) < 0.2

    # base attributes: Chinese values come through as the API sends them
    profile = doc["profile"]
    plan_cell = page.locator("#base-table tr", has_text="plan type").locator("td")
    expect(plan_cell).to_have_text(profile["plan_type"])
    assert CJK.search(profile["plan_type"]) and CJK.search(plan_cell.inner_text())
    expect(page.locator("#base-table tr", has_text="city").locator("td")).to_have_text(profile["city"])
    counts = profile["event_counts"]
    expect(page.locator("#counts-table tbody tr")).to_have_count(len(counts))
    expect(page.locator("#counts-chart rect")).to_have_count(len(counts))

    # SHAP: the API's top-K positive and negative contributions as diverging bars
    _check_shap(page, ex)
    if ex["embedding_missing"]:
        expect(page.locator("#embedding-note")).to_be_visible()
    else:
        expect(page.locator("#embedding-note")).to_be_hidden()
    screenshot(page, "profile-user")

    with page.expect_response(lambda r: "mode=grouped" in r.url, timeout=90_000) as grouped_resp:
        page.click(".segmented button[data-mode=grouped]")
    expect(page.locator("#shap-chart")).to_have_attribute("data-mode", "grouped")
    _check_shap(page, grouped_resp.value.json())
    screenshot(page, "profile-grouped")

    # rule hits and recommendations, as the API has them
    for r in ex["rules"]:
        row = page.locator(f'#rules-table tr[data-rule="{r["name"]}"]')
        expect(row).to_contain_text("error" if r.get("error") else ("fired" if r["fired"] else "no"))
    expect(page.locator("#recommendations li")).to_have_count(max(1, len(recs)))
    for r in recs:
        expect(page.locator("#recommendations")).to_contain_text(r["reason"])

    # the random-user helper looks up someone the API knows
    page.evaluate("document.querySelector('#profile-body').removeAttribute('data-user')")
    page.click("#random-user")
    expect(page.locator("#profile-body")).to_have_attribute("data-user", re.compile(r"^U\d{7}$"))
    picked = page.locator("#profile-body").get_attribute("data-user")
    expect(page.locator("#user-id")).to_have_value(picked)
    expect(page.locator("#profile-title")).to_contain_text(picked)
    assert api_get(system, f"/user/{picked}")["profile"]["user_id"] == picked

    # an unknown user: a clear "not found", nothing of the previous user left on screen
    page.fill("#user-id", "U9999999")
    page.click("#lookup-button")
    expect(page.locator("#not-found")).to_be_visible()
    expect(page.locator("#not-found")).to_contain_text("not found")
    expect(page.locator("#profile-body")).to_be_hidden()
    screenshot(page, "profile-not-found")
    assert log.unexpected_errors(allowed_statuses=(404,)) == []


def _check_shap(page: Any, ex: dict[str, Any]) -> None:
    wanted = ex["top_positive"] + ex["top_negative"]
    assert wanted, "a scored user has some contribution"
    rows = page.locator("#shap-chart g.shap-row")
    expect(rows).to_have_count(len(wanted))
    shown = [(rows.nth(i).get_attribute("data-feature"), float(rows.nth(i).get_attribute("data-value"))) for i in range(rows.count())]
    assert sorted(f for f, _ in shown) == sorted(c["feature"] for c in wanted)
    values = [v for _, v in shown]
    assert values == sorted(values, reverse=True), "raising contributions first, then lowering ones"
    for i, (_, v) in enumerate(shown):
        assert rows.nth(i).get_attribute("class").endswith("pos" if v >= 0 else "neg")
        # one rounding rule: every bar three decimals, as in the sentences
        expect(rows.nth(i).locator(".bar-value")).to_have_text(f"{'−' if v < 0 else '+'}{abs(v):.3f}")
    # a sentence per top contribution, in the bars' order, as the API words it
    by_feature = {c["feature"]: c for c in wanted}
    sentences = page.locator("#shap-sentences li")
    expect(sentences).to_have_count(len(wanted))
    for i, (feature, _) in enumerate(shown):
        expect(sentences.nth(i)).to_have_text(by_feature[feature]["text"])
        assert re.search(r"(raises?|lowers?) the score by \d\.\d{3}$", by_feature[feature]["text"])


# --------------------------------------------------------------------------- rules


def test_invalid_rule_shows_the_api_message(system: Server, context: Any) -> None:
    page, log = open_page(context, f"{system.url}/console/rules")
    spec = {"name": "console_bad", "description": "", "condition": "__import__('os').system('true')", "weight": 1.0,
            "enabled": True}
    page.fill("#rule-name", spec["name"])
    page.fill("#rule-condition", spec["condition"])
    page.click("#rule-save")
    status, body = http("POST", f"{system.url}/api/v1/rules", spec)  # what the API says of the same rule
    assert status == 422, body
    problem = next(d["problem"] for d in body["details"] if d["field"].endswith("condition"))
    expect(page.locator('[data-error-for="condition"]')).to_have_text(problem)
    expect(page.locator("#rule-condition")).to_have_class(re.compile("invalid"))
    screenshot(page, "rules-invalid")
    assert all(r["name"] != "console_bad" for r in api_get(system, "/rules")["rules"])
    assert log.unexpected_errors(allowed_statuses=(422,)) == []


def test_new_rule_changes_the_users_score(system: Server, context: Any) -> None:
    scored_user(system, USER)
    set_flow(system, "stop", "stop")  # nothing but the rule may move the score
    settled_score(system, USER)  # once a batch or refresh already in flight has landed
    try:
        profile, log = open_page(context, f"{system.url}/console/profile?user={USER}")
        expect(profile.locator("#fig-rule")).to_have_text(NUMBER)
        score_before, rule_before = figure(profile, "#fig-score"), figure(profile, "#fig-rule")
        # what the page shows (its explanation's score) is what the user is scored with now
        assert abs(score_before - api_get(system, f"/user/{USER}")["score"]["score"]) < 5e-4

        rules, rlog = open_page(context, f"{system.url}/console/rules")
        rules.fill("#rule-name", "console_loyal")
        rules.fill("#rule-description", "long-standing subscriber")
        rules.fill("#rule-condition", "tenure_months >= 0")
        rules.fill("#rule-weight", "5")
        # the preview says, before saving, how many sampled users the condition fires for
        expect(rules.locator("#rule-preview")).to_contain_text("fires for")
        fired, sample = (int(rules.locator("#rule-preview").get_attribute(a)) for a in ("data-fired", "data-sample"))
        assert sample > 0 and fired == sample  # every tenure is >= 0
        screenshot(rules, "rules-preview")
        rules.click("#rule-save")
        expect(rules.locator('#rules-list tr[data-rule="console_loyal"]')).to_contain_text("tenure_months >= 0")

        profile.reload()
        expect(profile.locator('#rules-table tr[data-rule="console_loyal"]')).to_contain_text("fired")
        expect(profile.locator("#fig-score")).not_to_have_text(f"{score_before:.3f}")
        assert figure(profile, "#fig-rule") != rule_before
        api_score = api_get(system, f"/user/{USER}")["score"]["score"]
        assert abs(figure(profile, "#fig-score") - api_score) < 5e-4
        screenshot(profile, "profile-after-rule")

        # and deleting it (confirmed) takes the score back
        rules.on("dialog", lambda d: d.dismiss())  # no native dialogs: the console uses its own
        rules.locator('#rules-list tr[data-rule="console_loyal"] button[data-action=delete]').click()
        expect(rules.locator("#confirm-dialog")).to_be_visible()
        rules.click("#confirm-ok")
        expect(rules.locator('#rules-list tr[data-rule="console_loyal"]')).to_have_count(0)
        profile.reload()
        expect(profile.locator("#fig-score")).to_have_text(f"{score_before:.3f}")
        assert log.unexpected_errors() == [] and rlog.unexpected_errors() == []
    finally:
        set_flow(system, "start", "start")


# --------------------------------------------------------------------------- operations


def test_stopping_ingestion_shows_as_stopped_on_the_overview(system: Server, context: Any) -> None:
    overview, olog = open_page(context, f"{system.url}/console/overview")
    expect(overview.locator("#st-ingestion")).to_have_text("running")
    overview.evaluate("window.__sameDocument = true")
    ops, log = open_page(context, f"{system.url}/console/operations")
    try:
        ops.click('[data-op="ingestion/stop"]')
        # the API answers with the flow's acknowledgement, or "pending" when the flow is slow to give it
        expect(ops.locator("#op-result")).to_contain_text(re.compile(r"applied — .*ingestion paused|pending"), timeout=90_000)
        expect(ops.locator("#ctl-ingestion")).to_have_text("stopped")
        expect(overview.locator("#st-ingestion")).to_have_text("stopped")
        assert overview.evaluate("window.__sameDocument") is True, "updated live, not by reloading"
        assert api_get(system, "/operations/status")["dataflow"]["ingestion"] == "paused"
        screenshot(overview, "overview-ingestion-stopped")
        expect(ops.locator("#history-table")).to_contain_text("ingestion.stop")
    finally:
        ops.click('[data-op="ingestion/start"]')
    expect(overview.locator("#st-ingestion")).to_have_text("running")
    assert log.unexpected_errors() == [] and olog.unexpected_errors() == []


def test_refresh_job_progress_reaches_done(system: Server, context: Any) -> None:
    page, log = open_page(context, f"{system.url}/console/overview")
    page.select_option("#refresh-form [name=mode]", "embedding_only")
    page.select_option("#refresh-form [name=graph_scope]", "sampled")
    page.fill("#refresh-form [name=sample_ratio]", "0.3")
    page.click("#refresh-submit")
    job = page.locator("#refresh-job")
    expect(job).to_be_visible()
    seen: list[float] = []
    deadline = time.monotonic() + 300
    while job.get_attribute("data-state") not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        seen.append(float(job.locator("progress").evaluate("p => p.value")))
        time.sleep(0.2)
    assert job.get_attribute("data-state") == "succeeded", job.inner_text()
    expect(job.locator(".job-pct")).to_have_text("100 %")
    assert seen == sorted(seen), "progress only moves forward"
    job_id = job.get_attribute("data-job-id")
    api_job = api_get(system, f"/jobs/{job_id}")
    assert api_job["state"] == "succeeded" and api_job["params"]["graph_scope"] == "sampled"
    # the final metrics are the job's result
    keys = page.locator("#refresh-job .metrics-table dt").all_inner_texts()
    scalar = [k for k, v in api_job["result"].items() if not isinstance(v, (dict, list))]
    assert scalar and all(k in keys for k in scalar), (scalar, keys)
    expect(page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')).to_contain_text("succeeded")
    screenshot(page, "overview-refresh-done")
    assert log.unexpected_errors() == []


def test_fusion_training_from_the_operations_page(system: Server, context: Any) -> None:
    page, log = open_page(context, f"{system.url}/console/operations")
    page.fill("#fusion-form [name=samples]", "150")
    page.fill("#fusion-form [name=epochs]", "5")
    page.click("#fusion-submit")
    job = page.locator("#fusion-job")
    expect(job).to_have_attribute("data-state", "succeeded", timeout=300_000)
    api_job = api_get(system, f"/jobs/{job.get_attribute('data-job-id')}")
    assert api_job["kind"] == "fusion.train" and api_job["params"]["samples"] == 150
    assert page.locator("#fusion-job .metrics-table dt").count() > 0
    expect(page.locator("#jobs-table")).to_contain_text(api_job["id"])
    screenshot(page, "operations-fusion")
    assert log.unexpected_errors() == []


# --------------------------------------------------------------------------- data configuration


def test_data_configuration_live_rate_validation_and_guarded_regenerate(system: Server, context: Any) -> None:
    page, log = open_page(context, f"{system.url}/console/data")  # the form holds /data/config by now
    page.fill("#live-form [name=live_rate]", "25")
    page.click("#live-submit")
    # the API answers once the flow applied the rate, or says it is pending when the flow is slow to
    expect(page.locator("#live-result")).to_contain_text(re.compile(r"applied|pending"), timeout=90_000)
    assert api_get(system, "/data/config")["config"]["live_rate"] == 25
    wait_for(lambda: any(h["command"] == "generator.config" and h["state"] == "applied" and h["params"].get("rate") == 25
                         for h in api_get(system, "/operations/status")["history"]), 90, "the flow to apply rate 25")

    users = page.locator("#cfg-users").input_value()
    page.fill("#cfg-users", "1")
    page.click("#dataset-save")
    status, body = http("POST", f"{system.url}/api/v1/data/config", {"users": 1})
    assert status == 422, body
    problem = next(d["problem"] for d in body["details"] if d["field"].endswith("users"))
    expect(page.locator('[data-error-for="users"]')).to_have_text(problem)
    expect(page.locator("#cfg-users")).to_have_class(re.compile("invalid"))
    screenshot(page, "data-invalid")

    # a per-user edge range the wrong way round: the API's message next to the pair of inputs
    page.fill("#cfg-users", users)
    page.fill("#cfg-calls_per_user-min", "5")
    page.fill("#cfg-calls_per_user-max", "2")
    page.click("#dataset-save")
    status, body = http("POST", f"{system.url}/api/v1/data/config", {"calls_per_user": {"min": 5, "max": 2}})
    assert status == 422, body
    problem = next(d["problem"] for d in body["details"] if d["field"] == "body.calls_per_user")
    expect(page.locator('[data-error-for="calls_per_user"]')).to_have_text(problem)
    expect(page.locator('[data-error-for="users"]')).to_be_empty()
    for part in ("min", "max"):
        expect(page.locator(f"#cfg-calls_per_user-{part}")).to_have_class(re.compile("invalid"))
    screenshot(page, "data-invalid-range")
    assert api_get(system, "/data/config")["config"]["calls_per_user"] == {"min": 0, "max": None}

    # a valid range is saved (the API's answer is what the form shows afterwards)
    page.fill("#cfg-calls_per_user-min", "2")
    page.fill("#cfg-calls_per_user-max", "6")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/data/config") and r.request.method == "POST") as saved:
        page.click("#dataset-save")
    assert saved.value.status == 200
    expect(page.locator('[data-error-for="calls_per_user"]')).to_be_empty()
    assert api_get(system, "/data/config")["config"]["calls_per_user"] == {"min": 2, "max": 6}
    expect(page.locator("#cfg-calls_per_user-max")).to_have_value("6")

    # regenerate asks first, naming what changes; cancelled, nothing starts
    jobs_before = api_get(system, "/jobs?kind=data.regenerate")["jobs"]
    page.fill("#cfg-calls_per_user-max", "")  # no upper limit
    page.click("#regenerate")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("new database file")
    expect(page.locator("#confirm-text")).to_contain_text("calls_per_user 2 – no limit")
    screenshot(page, "data-regenerate-confirm")
    page.click("#confirm-dialog button[value=cancel]")
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    assert api_get(system, "/jobs?kind=data.regenerate")["jobs"] == jobs_before
    assert log.unexpected_errors(allowed_statuses=(422,)) == []


# --------------------------------------------------------------------------- admin token


def test_admin_token_is_asked_once_and_kept_for_the_session(system: Server, context: Any) -> None:
    db = Path(api_get(system, "/operations/status")["api"]["db"])
    guarded = ups_api(db, UPS_ADMIN_TOKEN="s3cret-token-0123456").start(timeout=180)
    try:
        page, log = open_page(context, f"{guarded.url}/console/operations")
        expect(page.locator("#status-table")).to_contain_text("running")  # reading needs no token
        expect(page.locator("#token-dialog")).to_be_hidden()

        page.click('[data-op="ingestion/start"]')
        expect(page.locator("#token-dialog")).to_be_visible()
        page.fill("#token-input", "wrong-token-0123456789")
        page.click("#token-ok")
        # a wrong token: said at once, and not kept
        expect(page.locator("#toasts")).to_contain_text("refused this admin token")
        expect(page.locator("#op-result")).to_contain_text("Bearer")  # the API's 401 message
        expect(page.locator("#token-button")).to_have_text("Admin token")
        assert page.evaluate("sessionStorage.getItem('ups.adminToken')") is None

        # entered from the button, not asked by a refused change: checked at once too
        page.click("#token-button")
        page.fill("#token-input", "another-wrong-token")
        page.click("#token-ok")
        expect(page.locator("#toasts")).to_contain_text("refused this admin token")
        expect(page.locator("#token-button")).to_have_text("Admin token")
        assert page.evaluate("sessionStorage.getItem('ups.adminToken')") is None

        page.click('[data-op="ingestion/start"]')
        expect(page.locator("#token-dialog")).to_be_visible()
        expect(page.locator("#token-dialog-reason")).to_contain_text("admin token")
        page.fill("#token-input", "s3cret-token-0123456")
        page.click("#token-ok")
        expect(page.locator("#op-result")).to_contain_text(ACCEPTED, timeout=90_000)
        expect(page.locator("#token-button")).to_have_text("Admin token ✓")

        page.reload()  # same tab session: asked once, kept
        wait_ready(page)
        page.click('[data-op="ingestion/start"]')
        expect(page.locator("#op-result")).to_contain_text(ACCEPTED, timeout=90_000)
        expect(page.locator("#token-dialog")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('ups.adminToken')") == "s3cret-token-0123456"
        assert log.unexpected_errors(allowed_statuses=(401,)) == []
    finally:
        guarded.stop()


# --------------------------------------------------------------------------- shutdown (last: ends the system)


def test_shutdown_needs_confirmation_and_stops_the_system(system: Server, context: Any) -> None:
    page, log = open_page(context, f"{system.url}/console/operations")
    page.click("#shutdown")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-dialog button[value=cancel]")
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    assert http("GET", f"{system.url}/health")[0] == 200 and not system.wait_exit(0.5)

    page.click("#shutdown")
    screenshot(page, "operations-shutdown-confirm")
    page.click("#confirm-ok")
    expect(page.locator("#op-result")).to_contain_text("shutting_down")
    assert system.wait_exit(90), f"ups up still running after shutdown:\n{system.tail()}"
    expect(page.locator("#live-indicator")).not_to_have_text("live", timeout=30_000)
    assert log.page_errors == []
