"""The dashboard's job page and its views by user and by label, in a real headless Chromium at
1400 and 800 CSS pixels wide (one browser, resized live), against `dashboard_world`."""

from __future__ import annotations

import json
from typing import Any

from browser import Browser
from dashboard_world import EVAL_LOSS, LOSSES, World, seed
from sqlalchemy.orm import Session, sessionmaker
from support import ROOT

ARTIFACTS = ROOT / "test-artifacts"
NONE = "\u2013"  # what the page shows for no figure: an en dash


def _rows(b: Browser, table: str) -> list[list[str]]:
    return b.evaluate(
        f"[...document.querySelectorAll('#{table} tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent.trim()))"
    )


def _ready(b: Browser, view: str) -> None:
    b.wait_for(f"!document.getElementById('{view}').hidden && document.body.dataset.state === 'ready'")


def _fits(b: Browser, width: int) -> None:
    # Nothing pushes the page wider than the window: wide tables scroll inside their panels.
    assert b.evaluate("document.documentElement.scrollWidth") <= width


def _chart_fills(b: Browser, canvas: str) -> None:
    got = b.painted(canvas)
    assert got["painted"] > 1000, got  # drawn, not blank
    assert abs(got["box"] - got["container"]) <= 1, got  # as wide as its container, now


def _check_views(b: Browser, world: World, width: int) -> None:
    users = _rows(b, "users-table")
    assert [row[:3] for row in users] == [
        [f"alice ({world.alice[:10]})", "research", "$6.00"],
        [f"bob ({world.bob[:10]})", "research", "$0.0042"],
        [f"vis ({world.vision[:10]})", "vision", "$0.00052"],
    ]
    assert [row[3] for row in users] == ["1", "1", "1"]  # jobs started
    assert b.evaluate("document.getElementById('label-key').value") == "project"
    labels = _rows(b, "labels-table")
    assert [row[:3] for row in labels] == [["chat", "$6.00", "2"], ["vision-x", "$0.00052", "1"]]
    _chart_fills(b, "chart-spend")
    _fits(b, width)


def _check_job(b: Browser, width: int) -> None:
    attempts = _rows(b, "job-attempts")
    assert [row[:6] + row[7:] for row in attempts] == [
        ["1", "g5.xlarge", "spot", "preempted", "0", "120", "2h00m", "$2.00", "$2.00"],
        ["2", "g5.xlarge", "spot", "succeeded", "100", "300", "4h00m", "$4.00", "$0.36"],
    ]
    events = _rows(b, "job-events")
    assert len(events) == 11 and events[0][3] == "spot capacity reclaimed", events
    assert {row[1] for row in events} == {"status", "metrics", "message"}
    loss = b.evaluate(
        "(() => { const c = Chart.getChart('chart-loss');"
        " return c.data.datasets.map((d, i) => [d.label, d.data.map(p => [p.x, p.y]),"
        " c.getDatasetMeta(i).data.length]); })()"
    )
    assert loss == [
        ["Attempt 1", [list(p) for p in LOSSES[1]], 4],
        ["Attempt 2", [list(p) for p in LOSSES[2]], 4],
        ["Evaluation loss (checkpoints)", [[s, v] for s, v in EVAL_LOSS.items()], 2],
    ]
    _chart_fills(b, "chart-loss")
    assert _rows(b, "job-alternatives") == [
        ["g5.xlarge spot (chosen)", "5h30m", "$5.50", NONE, NONE],
        ["g6.xlarge spot", "7h00m", "$6.30", "+1h30m", "+$0.80"],
        ["g5.xlarge", "5h00m", "$15.00", "-30m00s", "+$9.50"],
    ]
    plan = b.evaluate("document.getElementById('job-plan').textContent")
    assert "Estimated$5.50 over 5h30m" in plan and "Actual$6.00 over 6h00m" in plan
    assert b.evaluate("document.getElementById('job-goodput').textContent") == "54%"
    assert _rows(b, "job-goodput-table") == [
        ["Productive", "$3.24", "54%"],
        ["Start-up", "$0.40", "7%"],
        ["Recomputed", "$0.36", "6%"],
        ["Lost (failed, preempted)", "$2.00", "33%"],
        ["Billed", "$6.00", "6h00m"],
    ]
    _fits(b, width)


def test_job_page_and_views_at_1400_and_800(
    browser: Browser, live_server: str, sessions: sessionmaker[Session]
) -> None:
    world = seed(sessions)
    browser.navigate(f"{live_server}/dashboard")
    assert browser.wait_state("ready", "error", "login") == "login"
    # Signed out, the prompt is all there is: no filters, no buttons, no figures.
    shown = browser.evaluate(
        "['filters', 'refresh', 'csv', 'forget', 'main']"
        ".map(i => document.getElementById(i).getClientRects().length > 0)"
    )
    assert shown == [False] * 5
    browser.evaluate(
        f"document.getElementById('key-input').value = {json.dumps(world.admin)};"
        "document.getElementById('login-form').requestSubmit()"
    )
    assert browser.wait_state("ready", "error") == "ready", browser.problems()
    assert browser.evaluate("document.getElementById('filters').getClientRects().length > 0")
    _check_views(browser, world, 1400)

    browser.evaluate(f"location.hash = '#job/{world.llama}'")
    _ready(browser, "job-view")
    _check_job(browser, 1400)
    browser.screenshot(ARTIFACTS / "dashboard-job-1400.png")
    # Resized live on the job page, with the overview and its charts hidden.
    browser.resize(800)
    browser.wait_for("Chart.getChart('chart-loss').width < 800")
    _check_job(browser, 800)
    browser.screenshot(ARTIFACTS / "dashboard-job-800.png")
    browser.evaluate(f"location.hash = '#job/{world.tiny}'")
    browser.wait_for(f"document.getElementById('job-title').textContent.includes('{world.tiny}')")
    _ready(browser, "job-view")
    assert [row[8] for row in _rows(browser, "job-attempts")] == ["$0.00052"]
    assert browser.evaluate("document.getElementById('loss-note').textContent") == "No loss reported yet."

    browser.evaluate("location.hash = ''")
    _ready(browser, "overview")
    browser.wait_for("Chart.getChart('chart-spend').width < 800")
    _check_views(browser, world, 800)
    browser.screenshot(ARTIFACTS / "dashboard-800.png")
    # A label's value opens the jobs behind it.
    browser.evaluate("document.querySelector('#labels-table tbody a').click()")
    _ready(browser, "drill")
    drill: list[Any] = [row[0] for row in _rows(browser, "drill-table")]
    assert drill == [f"llama-sft · {world.llama}", f"probe · {world.probe}"]
    assert "(" + "$6.00" + ")" in browser.evaluate("document.getElementById('drill-title').textContent")
    assert browser.problems() == []
