"""A Ray cluster for tests and benchmarks, started the way production starts one (`ray start
--head`) so that attempt processes connect to it by address; this process connects too."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@contextlib.contextmanager
def ray_cluster(num_cpus: int = 2) -> Iterator[str]:
    """`RAY_ADDRESS` when set; else a fresh local head, stopped (all of it) on exit."""
    # Ray 2.60 turns token auth on for local clusters when a token exists and caches the mode
    # when it first reads its config: callers should set this before anything imports ray.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        ray.init(address=address, configure_logging=False, log_to_driver=False)
        try:
            yield address
        finally:
            ray.shutdown()
        return
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # A fresh machine has no token yet; make one (a no-op when it exists).
    subprocess.run([ray_bin, "get-auth-token", "--generate"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Ray's unix socket paths must stay short; pytest's temp paths are too long for them.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    log = open(Path(temp_dir) / "ray-start.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ray.init(address=address, configure_logging=False, log_to_driver=False)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
        os.environ["RAY_ADDRESS"] = address
        yield address
    finally:
        ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        # `ray start --block` waits on its children for up to 30 s after a SIGTERM; a test
        # cluster holds nothing worth that wait.
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Some Ray processes leave the group; everything of this cluster names its temp dir.
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class NodeCluster:
    """A head and worker nodes, each a `ray start` process of its own on this machine; every
    worker node carries the resource ``node:<name>`` = 1 so it can be told apart."""

    address: str
    nodes: dict[str, RayNode] = field(default_factory=dict)
    # Name -> node id of every worker node that joined, alive or not now.
    known: dict[str, str] = field(default_factory=dict)
    # The names of the nodes drained or killed.
    gone: set[str] = field(default_factory=set)

    def node_ids(self) -> dict[str, str]:
        """Node name -> Ray node id, for the worker nodes alive now."""
        code = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, configure_logging=False, log_to_driver=False)\n"
            "print(json.dumps([[n['NodeID'], n['Resources']] for n in ray.nodes() if n['Alive']]))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        )
        found = {}
        for node_id, resources in json.loads(out.stdout.strip().splitlines()[-1]):
            for name in self.nodes:
                if resources.get(f"node-{name}"):
                    found[name] = node_id
        return found

    def drain(self, node_id: str, *, deadline_s: int) -> None:
        """Announce a preemption of the node, as a cloud's spot reclaim reaches Ray's autoscaler."""
        self.gone.update(name for name, known in self.known.items() if known == node_id)
        subprocess.run(
            [
                _ray_bin(),
                "drain-node",
                f"--address={self.address}",
                "--reason=DRAIN_NODE_REASON_PREEMPTION",
                "--reason-message=spot capacity reclaimed",
                f"--deadline-remaining-seconds={deadline_s}",
                f"--node-id={node_id}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def kill(self, name: str) -> None:
        """The node vanishes without notice: its `ray start` process group is SIGKILLed."""
        self.gone.add(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.nodes[name].process.pid, signal.SIGKILL)


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


@contextlib.contextmanager
def node_cluster(
    workers: dict[str, dict[str, float]], *, worker_cpus: int = 2, env: dict[str, str] | None = None
) -> Iterator[NodeCluster]:
    """A head with no CPU of its own to train on (it still holds the run's actors, which need
    none) and one worker node per entry of ``workers``, each with ``worker_cpus`` CPUs and its
    resources (a pool's resource, a spot marker); ``env`` is added to every node's environment
    (its Ray processes inherit it); all of it stopped on exit."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray_bin = _ray_bin()
    subprocess.run([ray_bin, "get-auth-token", "--generate"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="rayn", dir="/tmp")
    log = open(Path(temp_dir) / "ray-start.log", "wb")  # noqa: SIM115 - closed in finally
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{port}"

    def start(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [ray_bin, "start", "--block", "--disable-usage-stats", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    procs = [
        start(
            "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false", f"--temp-dir={temp_dir}"
        )
    ]
    cluster = NodeCluster(address)
    try:
        _wait_for_nodes(cluster, 0, procs[0])
        for name, resources in workers.items():
            proc = start(
                f"--address={address}",
                f"--num-cpus={worker_cpus}",
                f"--resources={json.dumps({**resources, f'node-{name}': 1})}",
            )
            procs.append(proc)
            cluster.nodes[name] = RayNode(name, proc)
            # One at a time: raylets starting together on a busy machine miss Ray's fixed 30 s
            # start-up wait.
            _wait_for_nodes(cluster, len(cluster.nodes), procs[0])
        cluster.known.update(cluster.node_ids())
        yield cluster
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_nodes(cluster: NodeCluster, count: int, head: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if len(cluster.node_ids()) >= count:
                return
        except subprocess.SubprocessError:
            pass
        if time.monotonic() > deadline or head.poll() is not None:
            raise RuntimeError(f"the Ray cluster at {cluster.address} did not reach {count} worker nodes")
        time.sleep(1)
