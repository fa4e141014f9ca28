"""The ops cost dashboard's overview, in a real headless Chromium (tests/browser.py; the
`browser` fixture is in conftest.py). The job page and the views by user and label are in
test_dashboard_job.py."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from browser import Browser
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from support import ROOT, make_key

from trainyard.platform.costs import ledger
from trainyard.platform.models import ApiKey, Job, JobAttempt, Team

ARTIFACTS = ROOT / "test-artifacts"
STATIC = ROOT / "trainyard" / "api" / "static"


# --- data -----------------------------------------------------------------------------------


def _seed(sessions: sessionmaker[Session]) -> dict[str, str]:
    """Spend inside the last seven days, every attempt finished, so the figures are exact:
    research: a preempted 2 h spot attempt and a succeeded 4 h one at $1/h (on-demand $3/h,
    estimate $10); vision: a failed 3 h attempt at $6/h. Plus one queued and one running job."""
    keys = {
        "member": make_key(sessions, "research"),
        "vision": make_key(sessions, "vision"),
        "admin": make_key(sessions, "ops", role="admin"),
    }
    with sessions.begin() as s:
        now = s.scalar(select(text("now()")))
        assert isinstance(now, datetime)
        teams = {t.name: t for t in s.scalars(select(Team))}
        key_of = {k.team.name: k.id for k in s.scalars(select(ApiKey))}
        teams["research"].monthly_budget_usd = 100.0

        def job(team: str, name: str, status: str, plan: dict[str, Any], cost: float) -> Job:
            j = Job(
                team_id=teams[team].id,
                api_key_id=key_of[team],
                name=name,
                status=status,
                spec={"name": name, "base_model": "s3://models/gpt2"},
                job_metadata={},
                plan=plan,
                instance_type=plan["instance_type"],
                pool=plan["instance_type"],
                cost_usd=cost,
            )
            s.add(j)
            s.flush()
            return j

        def attempt(
            j: Job, n: int, ago: timedelta, hours: float, rate: float, outcome: str, spot: bool
        ) -> None:
            start = now - ago
            att = JobAttempt(
                job_id=j.id,
                number=n,
                worker_id="w",
                started_at=start,
                heartbeat_at=start + timedelta(hours=hours),
                lease_expires_at=start + timedelta(hours=hours),
                ended_at=start + timedelta(hours=hours),
                outcome=outcome,
                billable_seconds=hours * 3600,
                cost_usd=hours * rate,
            )
            # Billed on its job's plan, as a claim records it; a million tokens trained.
            ledger.record_terms(att, j.plan, j.instance_type, (0, 0))
            att.spot, att.usd_per_hour = spot, rate
            ledger.record_progress(att, tokens=1_000_000)
            s.add(att)

        spot_plan = {
            "instance_type": "g5.xlarge",
            "accelerator": "A10G",
            "accelerator_count": 1,
            "spot": True,
            "usd_per_hour": 1.0,
            "on_demand_usd_per_hour": 3.0,
            "estimated_cost_usd": 10.0,
        }
        big_plan = {
            "instance_type": "g5.12xlarge",
            "accelerator": "A10G",
            "accelerator_count": 4,
            "spot": False,
            "usd_per_hour": 6.0,
            "on_demand_usd_per_hour": 6.0,
            "estimated_cost_usd": 15.0,
        }
        j1 = job("research", "llama-sft", "succeeded", spot_plan, 6.0)
        attempt(j1, 1, timedelta(days=3), 2, 1.0, "preempted", True)
        attempt(j1, 2, timedelta(days=2), 4, 1.0, "succeeded", True)
        j2 = job("vision", "vit-<b>bold</b>", "failed", big_plan, 18.0)
        attempt(j2, 1, timedelta(days=1), 3, 6.0, "failed", False)
        queued = job("research", "queued-one", "queued", {**spot_plan, "estimated_cost_usd": 2.0}, 0.0)
        job("vision", "running-one", "running", big_plan, 0.0)
        return {**keys, "j1": j1.id, "j2": j2.id, "queued": queued.id}


def _texts(b: Browser, *ids: str) -> dict[str, str]:
    return b.evaluate(
        f"Object.fromEntries({json.dumps(list(ids))}"
        ".map(i => [i, document.getElementById(i).textContent.trim()]))"
    )


# --- tests ----------------------------------------------------------------------------------


def test_dashboard_in_a_real_browser(
    browser: Browser, live_server: str, sessions: sessionmaker[Session]
) -> None:
    seed = _seed(sessions)
    browser.navigate(f"{live_server}/dashboard#key={seed['admin']}")
    assert browser.wait_state("ready", "error", "login") == "ready", browser.problems()
    # The key moved from the address bar into this tab's session storage.
    assert browser.evaluate("location.hash") == ""
    assert browser.evaluate("sessionStorage.getItem('trainyard.apiKey')") == seed["admin"]
    got = _texts(
        browser,
        "total-cost", "total-waste", "total-savings", "total-estimate", "total-jobs",
        "total-hours", "queue-waiting", "queue-running", "queue-gpus",
    )  # fmt: skip
    assert got == {
        "total-cost": "$24.00",  # $2 + $4 + $18
        "total-waste": "$20.00",  # the preempted $2 and the failed $18
        "total-savings": "$12.00",  # 6 spot hours at $2 under on-demand
        "total-estimate": "-40.0%",  # llama-sft: $6 spent on a $10 estimate
        "total-jobs": "2",
        "total-hours": "9.0",
        "queue-waiting": "1",
        "queue-running": "1",
        "queue-gpus": "4",
    }
    teams = browser.evaluate(
        "[...document.querySelectorAll('#teams-table tbody tr')].map(r => r.cells[0].textContent)"
    )
    assert teams == ["vision", "research"]
    # Every chart drew on its canvas.
    drawn = browser.evaluate(
        "[...document.querySelectorAll('#overview canvas')].map(c => [c.id, Boolean(Chart.getChart(c))])"
    )
    assert all(ok for _, ok in drawn) and len(drawn) == 8, drawn
    spend = browser.evaluate(
        "Chart.getChart('chart-spend').data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)])"
    )
    assert dict(spend) == pytest.approx({"vision": 18.0, "research": 6.0})
    # Goodput per team: research's preempted $2 lost and its $4 run productive; vision's $18 lost.
    goodput = browser.evaluate(
        "(() => { const c = Chart.getChart('chart-goodput-team');"
        " return [c.data.labels, c.data.datasets.map(d => [d.label, d.data])]; })()"
    )
    assert goodput[0] == ["vision · 0%", "research · 67%"]
    assert {name: [round(v, 6) for v in values] for name, values in goodput[1]} == {
        "Productive": [0, 4],
        "Start-up": [0, 0],
        "Recomputed": [0, 0],
        "Lost (failed, preempted)": [18, 2],
    }
    # A job name is shown as text, never as markup.
    assert browser.evaluate("document.querySelector('#jobs-table b') === null")
    assert "vit-<b>bold</b>" in browser.evaluate("document.getElementById('jobs-table').textContent")
    browser.screenshot(ARTIFACTS / "dashboard.png")
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000

    # Numbers link to the jobs behind them: a team's spend opens its jobs, a job opens the job.
    href = browser.evaluate(
        "document.querySelector('#teams-table tbody tr:nth-child(2) td:nth-child(2) a').getAttribute('href')"
    )
    assert href == "#drill/team/research"
    browser.evaluate("document.querySelector('#teams-table tbody tr:nth-child(2) td:nth-child(2) a').click()")
    browser.wait_for("!document.getElementById('drill').hidden && document.body.dataset.state === 'ready'")
    rows = browser.evaluate(
        "[...document.querySelectorAll('#drill-table tbody tr')].map(r => r.cells[0].textContent)"
    )
    assert rows == [f"llama-sft · {seed['j1']}"]
    browser.evaluate(f"location.hash = '#job/{seed['j2']}'")
    browser.wait_for("!document.getElementById('job-view').hidden && document.body.dataset.state === 'ready'")
    assert seed["j2"] in browser.evaluate("document.getElementById('job-title').textContent")
    assert '"status": "failed"' in browser.evaluate("document.getElementById('job-json').textContent")
    # A waiting job's page says why it waits: no pool of this deployment runs its g5.xlarge.
    browser.evaluate(f"location.hash = '#job/{seed['queued']}'")
    browser.wait_for(f"document.getElementById('job-title').textContent.includes('{seed['queued']}')")
    fields = browser.evaluate("document.getElementById('job-fields').textContent")
    assert "Queueg5.xlarge, pool_unavailable: no pool of this deployment runs g5.xlarge" in fields

    # The CSV button downloads the same figures as /v1/costs.csv.
    downloads = Path(browser.profile) / "downloads"
    downloads.mkdir()
    browser.send(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}, session=None
    )
    browser.evaluate("document.getElementById('csv').click()")
    deadline = time.monotonic() + 15
    while not list(downloads.glob("*.csv")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (csv_file,) = downloads.glob("*.csv")
    assert csv_file.read_text().splitlines()[0].startswith("bucket_start,bucket_end,team,cost_usd")

    # Changing the filters reloads the figures.
    browser.evaluate("location.hash = ''")
    browser.evaluate(
        "const t = document.getElementById('team'); t.value = 'vision'; t.dispatchEvent(new Event('change'))"
    )
    browser.wait_for(
        "document.body.dataset.state === 'ready'"
        " && document.getElementById('total-cost').textContent === '$18.00'"
    )
    assert browser.problems() == []


def test_dashboard_asks_for_a_key_and_a_member_sees_their_team(
    browser: Browser, live_server: str, sessions: sessionmaker[Session]
) -> None:
    seed = _seed(sessions)
    browser.navigate(f"{live_server}/dashboard")
    assert browser.wait_state("ready", "error", "login") == "login"
    browser.evaluate(
        f"document.getElementById('key-input').value = {json.dumps(seed['member'])};"
        "document.getElementById('login-form').requestSubmit()"
    )
    assert browser.wait_state("ready", "error") == "ready", browser.problems()
    got = _texts(browser, "total-cost", "total-waste", "queue-waiting", "queue-running")
    assert got == {"total-cost": "$6.00", "total-waste": "$2.00", "queue-waiting": "1", "queue-running": "0"}
    teams = browser.evaluate(
        "[...document.querySelectorAll('#teams-table tbody tr')].map(r => r.cells[0].textContent)"
    )
    assert teams == ["research"]
    # The key is kept for the tab: a reload does not ask again.
    browser.navigate(f"{live_server}/dashboard")
    browser.wait_for("document.body.dataset.state === 'ready'")
    # A wrong key sends the user back to the prompt with a message, not to a broken page.
    browser.evaluate("sessionStorage.setItem('trainyard.apiKey', 'ty_wrong')")
    browser.navigate(f"{live_server}/dashboard")
    assert browser.wait_state("login", "error") == "login"
    assert "not accepted" in browser.evaluate("document.getElementById('login-error').textContent")
    # The 401 the wrong key drew is the only complaint.
    problems = browser.problems()
    assert all("401" in p for p in problems) and len(problems) == 1, problems


# --- without a browser ----------------------------------------------------------------------


def test_dashboard_files_are_local_and_small(client: Any) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    for name in re.findall(r'(?:src|href)="/dashboard/static/([^"]+)"', page.text):
        r = client.get(f"/dashboard/static/{name}")
        assert r.status_code == 200, name
    chart = STATIC / "chart.umd.min.js"
    assert chart.stat().st_size < 300_000
    assert "Released under the MIT License" in chart.read_text()[:600]
    # Nothing is loaded from another host at run time.
    for path in STATIC.iterdir():
        if path.suffix in (".html", ".js", ".css") and path.name != "chart.umd.min.js":
            assert not re.search(r"(src|href)=\"(https?:)?//", path.read_text()), path.name
            assert "cdn" not in path.read_text().lower(), path.name


@pytest.mark.parametrize("name", ["..%2Fapp.py", "../routes_costs.py", ".hidden", "nope.js", "%2e%2e"])
def test_static_files_refuse_anything_else(client: Any, name: str) -> None:
    r = client.get(f"/dashboard/static/{name}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] in ("not_found",)
