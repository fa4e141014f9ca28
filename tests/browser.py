"""A real headless Chromium, spoken to over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: JSON messages separated by NUL on file descriptors 3 and 4), so no
browser-automation package and no websocket client is needed. Chromium comes from Debian's
package: `binary_or_skip` installs it with apt-get where it is missing and this runs as root
(CI), and skips with the reason elsewhere. The fixtures (`browser_binary`, `browser`) are in
conftest.py."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


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


def binary_or_skip() -> str:
    """The browser's path, installed first where it can be; skips the test with why not."""
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
        self.width = 1400
        self.resize(1400, 1000)

    def resize(self, width: int, height: int = 1000) -> None:
        """Make the page's viewport `width` x `height` CSS pixels, as a window resized live."""
        self.width = width
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
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

    def painted(self, canvas_id: str) -> dict[str, int]:
        """A canvas's drawing buffer and CSS box, its container's width, and how many of its
        pixels are painted (0: a blank chart)."""
        return self.evaluate(
            f"(() => {{ const c = document.getElementById({json.dumps(canvas_id)});"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++;"
            " return {width: c.width, height: c.height, box: c.clientWidth,"
            " container: c.parentElement.clientWidth, painted: n}; })()"
        )

    def screenshot(self, path: Path) -> None:
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 1000)
        self.resize(self.width, min(height, 8000))
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


@contextlib.contextmanager
def open_browser(binary: str) -> Iterator[Browser]:
    """A browser with a profile of its own, closed and the profile removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="trainyard-chromium-") as profile:
        b = Browser(binary, profile)
        try:
            yield b
        finally:
            b.close()
