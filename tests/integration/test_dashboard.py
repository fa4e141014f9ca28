"""The ops cost dashboard, in a real headless Chromium.

The browser is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
messages separated by NUL on file descriptors 3 and 4), so no browser-automation package and no
websocket client is needed. Chromium comes from Debian's package; the session fixture installs
it with apt-get where it is missing and this runs as root (CI), and skips with the reason
elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from support import ROOT, make_key

from trainyard.platform.costs import ledger
from trainyard.platform.models import ApiKey, Job, JobAttempt, Team

ARTIFACTS = ROOT / "test-artifacts"
STATIC = ROOT / "trainyard" / "api" / "static"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# --- the browser ------------------------------------------------------------------------------


def _find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install_browser() -> str:
    """Install Debian's chromium where we can; returns why not otherwise."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "chromium is not installed and installing it needs root (apt-get install chromium)"
    if shutil.which("apt-get") is None:
        return "chromium is not installed and there is no apt-get to install it with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
    ):
        try:
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out = getattr(exc, "stderr", b"") or b""
            return f"`{' '.join(cmd)}` failed: {out.decode(errors='replace')[-500:]}"
    return "apt-get installed chromium but it is not on PATH"


@pytest.fixture(scope="session")
def browser_binary() -> str:
    path = _find_browser()
    if path is None:
        reason = _install_browser()
        path = _find_browser()
        if path is None:
            pytest.skip(reason)
    return path


class CDPError(RuntimeError):
    pass


_LAUNCHER = (
    "import os, sys\n"
    "os.dup2(int(sys.argv[1]), 3)\n"
    "os.dup2(int(sys.argv[2]), 4)\n"
    "os.close(int(sys.argv[1]))\n"
    "os.close(int(sys.argv[2]))\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class Browser:
    """A headless Chromium and one page in it, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, profile: str) -> None:
        self.profile = profile
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [
            "--headless=new",
            "--remote-debugging-pipe",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
        # A small launcher moves the browser's pipe ends onto fds 3 and 4, where the pipe
        # transport expects them (no preexec_fn: this process has threads, the server among
        # them; no /bin/sh: dash cannot name fds above 9). The ends are first lifted above 9 so
        # that neither can sit on 3 or 4 and be overwritten by the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)
        self.log = open(os.path.join(profile, "browser.log"), "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _LAUNCHER,
                str(high[0]),
                str(high[1]),
                binary,
                *args,
                "about:blank",
            ],
            pass_fds=tuple(high),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        for fd in high:
            os.close(fd)
        self._next_id = 0
        self._lock = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = ""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=None)["targetId"]
        self.session = self.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=None
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._lock.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._lock:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._lock.notify_all()

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = "",
        timeout: float = 30,
    ) -> Any:
        with self._lock:
            self._next_id += 1
            msg_id = self._next_id
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        sid = self.session if session == "" else session
        if sid:
            message["sessionId"] = sid
        try:
            os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise CDPError(f"the browser has gone (exit code {self.proc.poll()}); {self.tail()}") from None
        deadline = time.monotonic() + timeout
        with self._lock:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise CDPError(
                        f"no reply to {method} (browser exit code {self.proc.poll()}); {self.tail()}"
                    )
                self._lock.wait(left)
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def wait_for(self, expression: str, *, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except CDPError:
                value = None  # the page is between documents
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {expression!r} (last {value!r}); state: {self.state()!r}"
        )

    def state(self) -> Any:
        try:
            return self.evaluate("document.body && document.body.dataset.state")
        except CDPError:
            return None

    def wait_state(self, *wanted: str, timeout: float = 30) -> str:
        want = json.dumps(list(wanted))
        self.wait_for(f"document.body && {want}.includes(document.body.dataset.state)", timeout=timeout)
        return str(self.state())

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page has logged."""
        out = []
        with self._lock:
            events = list(self.events)
        for e in events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(
                    f"exception: {details.get('exception', {}).get('description') or details.get('text')}"
                )
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(
                    "console.error: "
                    + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", []))
                )
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
        return out

    def screenshot(self, path: Path) -> None:
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 1000)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": min(height, 8000), "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(0.3)  # charts resize to the new viewport
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def tail(self) -> str:
        self.log.flush()
        try:
            with open(self.log.name, "rb") as f:
                return "browser log: " + f.read()[-2000:].decode(errors="replace")
        except OSError:
            return "no browser log"

    def close(self) -> None:
        with contextlib.suppress(CDPError, OSError):
            self.send("Browser.close", session=None, timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.log.close()


@pytest.fixture
def browser(browser_binary: str) -> Iterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="trainyard-chromium-") as profile:
        b = Browser(browser_binary, profile)
        try:
            yield b
        finally:
            b.close()


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
        "[...document.querySelectorAll('canvas')].map(c => [c.id, Boolean(Chart.getChart(c))])"
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
