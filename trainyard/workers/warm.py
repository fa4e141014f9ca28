"""Warm attempts: a runner process that imports what an attempt needs once, and forks each
attempt from there.

A cold attempt is a fresh interpreter importing torch, transformers, peft and Ray Train before it
can connect to anything: seconds on every attempt (over 20 s on a loaded 2-core machine). The
runner pays that once per worker process. Each attempt is still a process of its own — forked,
in a session of its own, with the environment the daemon gives it — so a crash or a kill of one
cannot take down the daemon, the runner or another attempt.

What is safe to fork from is kept narrow: the runner only imports (no thread of its own, no
Ray connection, no database connection, no tensor op that would start torch's thread pools), and
it forks between two imports, so a claim never waits for the preload to finish. A runner that
dies is started again on the next spawn; attempts it had forked keep running, and their end is
then seen by their pid disappearing.

Protocol, one JSON object per line over a socket pair:
    daemon -> runner  {"id": n, "argv": [...], "env": {...}, "title": "...", "log": "/path"}
    runner -> daemon  {"id": n, "pid": p}   then, when it ends,   {"exit": p, "code": c}
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from typing import Any

log = logging.getLogger("trainyard.worker")

# In import order: the attempt's own modules first (cheap, and what every attempt needs), then
# what a run needs. Ray Train pulls in torch and transformers through the training loop.
PRELOAD = (
    "trainyard.workers.attempt",
    "torch",
    "ray",
    "transformers",
    "trainyard.workers.control",
    "trainyard.workers.launch",
)
# The runner answers between two imports; one import can take seconds on a loaded machine.
SPAWN_TIMEOUT_S = 120.0
UNKNOWN_EXIT = -1  # the attempt ended while no runner watched it: recorded as a crash (fenced)


class RunnerGone(Exception):
    """The runner is not there to fork an attempt."""


class WarmProcess:
    """An attempt forked by the runner: what the daemon needs of a ``subprocess.Popen``."""

    def __init__(self, pid: int, runner: WarmRunner) -> None:
        self.pid = pid
        self._runner = runner
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._runner.exit_code(self.pid)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class WarmRunner:
    """The daemon's side: starts the runner, asks it for attempts, learns how they end."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self._sock = ours
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "trainyard.workers.warm", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            # Not in the daemon's session: a Ctrl-C on its terminal is the daemon's to handle.
            start_new_session=True,
        )
        theirs.close()
        self._lock = threading.Lock()  # one request at a time
        self._replied = threading.Condition()
        self._replies: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, name="warm-runner", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None and self._reader.is_alive()

    def spawn(self, argv: list[str], env: dict[str, str], title: str, log_path: str) -> WarmProcess:
        """Fork ``python -m trainyard.workers.attempt *argv`` with ``env``, its stdout and stderr
        appended to ``log_path``. Raises `RunnerGone` only when no fork can have happened, so a
        caller may then start the attempt cold."""
        with self._lock:
            if not self.alive:
                raise RunnerGone("the warm runner is not running")
            self._next_id += 1
            request = self._next_id
            line = (
                json.dumps({"id": request, "argv": argv, "env": env, "title": title, "log": log_path}) + "\n"
            )
            try:
                self._sock.sendall(line.encode())
            except OSError as exc:
                raise RunnerGone(str(exc)) from exc
            with self._replied:
                self._replied.wait_for(lambda: request in self._replies or not self.alive, SPAWN_TIMEOUT_S)
                pid = self._replies.pop(request, None)
        if pid is None:
            # It may have forked and died before answering: starting the attempt again could run
            # it twice. The attempt is reported ended instead; the daemon records a crash (fenced,
            # so a copy that did start finds its attempt closed and writes nothing).
            log.error("the warm runner did not answer a spawn; the attempt is recorded as crashed")
            proc = WarmProcess(-1, self)
            proc.returncode = UNKNOWN_EXIT
            return proc
        return WarmProcess(pid, self)

    def exit_code(self, pid: int) -> int | None:
        with self._replied:
            if pid in self._exits:
                return self._exits.pop(pid)
        if self.alive:
            return None
        try:  # nobody reaps it for us any more: it is over once its pid is gone
            os.kill(pid, 0)
        except ProcessLookupError:
            return UNKNOWN_EXIT
        except PermissionError:
            return UNKNOWN_EXIT
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()  # the runner exits on end of file; its attempts run on
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    message = json.loads(line)
                    with self._replied:
                        if "exit" in message:
                            self._exits[int(message["exit"])] = int(message["code"])
                        else:
                            self._replies[int(message["id"])] = int(message["pid"])
                        self._replied.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._replied:
                self._replied.notify_all()


_shared: WarmRunner | None = None
_shared_lock = threading.Lock()


def shared_runner() -> WarmRunner:
    """The process's runner, started on first use and again if it died: every daemon in one
    process (a test session runs many) forks from the same warm imports."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive:
            _shared = WarmRunner()
        return _shared


# -- the runner process -------------------------------------------------------------------------


def _run_attempt(request: dict[str, Any]) -> int:
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    import setproctitle

    # `ps` and `pgrep -f` see the attempt as they would see a cold one. Before the environment
    # changes: the title takes the memory of the runner's argv and environment block.
    setproctitle.setproctitle(str(request["title"]))
    os.environ.clear()
    os.environ.update(request["env"])
    out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    from trainyard.workers.attempt import main

    return main(list(request["argv"]))


def _fork(request: dict[str, Any], sock: socket.socket) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        sock.close()
        code = _run_attempt(request)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return 0  # unreachable: the child never returns


def serve(fd: int, preload: tuple[str, ...] = PRELOAD) -> None:
    """The runner's loop: answer spawns at once, import the next module while idle, reap."""
    sock = socket.socket(fileno=fd)
    pending = list(preload)
    buffer = b""

    def send(message: dict[str, Any]) -> None:
        sock.sendall((json.dumps(message) + "\n").encode())

    while True:
        readable, _, _ = select.select([sock], [], [], 0 if pending else 0.2)
        if readable:
            data = sock.recv(65536)
            if not data:
                return  # the daemon is gone; the attempts are not ours to stop
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                send({"id": request["id"], "pid": _fork(request, sock)})
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
        if pending and not readable:
            name = pending.pop(0)
            try:
                importlib.import_module(name)
            except Exception:  # an attempt would import it itself, and fail there if it must
                traceback.print_exc()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon ends the runner by closing the socket
    serve(int(sys.argv[1]))
