"""Checkpoint I/O throughput: ObjectStore against boto3's own transfer manager, on a local moto server.

Both sides move the same checkpoint file to and from the same server; the baseline is
``client.upload_file`` / ``client.download_file`` with boto3's default TransferConfig. Each figure
is the median of several rounds, and the two sides take turns going first so that neither always
meets a warm or a cold server. The goal is that the store costs nothing noticeable: ours/baseline
>= 0.9.

    python bench/checkpoint_io.py [--size-mb 200] [--repeats 3]

Figures against moto measure client overhead more than S3 itself: moto holds objects in one
local process, so absolute MB/s say little about a real bucket, but the ratio still shows whether
the store's wrapping costs throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from trainyard.platform.storage import MB, S3Store, open_store
from trainyard.testing.moto import start_moto_server

GOAL = 0.9


@contextlib.contextmanager
def _aws_env(endpoint_url: str) -> Iterator[None]:
    values = {
        "AWS_ENDPOINT_URL_S3": endpoint_url,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _write_checkpoint(path: Path, size: int) -> None:
    # Random bytes: a checkpoint does not compress, and nothing on the way should get to cheat.
    with path.open("wb") as out:
        for _ in range(size // MB):
            out.write(os.urandom(MB))
        out.write(os.urandom(size % MB))


def results(size_mb: int = 200, repeats: int = 3) -> list[dict[str, Any]]:
    """Run the benchmark; one dict per measured operation with MB/s for ours and the baseline."""
    import boto3

    size = size_mb * MB
    timings: dict[str, dict[str, list[float]]] = {
        "write": {"ours": [], "baseline": []},
        "read": {"ours": [], "baseline": []},
    }
    with (
        start_moto_server() as server,
        _aws_env(server.endpoint_url),
        tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp,
    ):
        work = Path(tmp)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        client = boto3.session.Session().client("s3")
        client.create_bucket(Bucket=bucket)
        store = open_store(f"s3://{bucket}/ours")
        assert isinstance(store, S3Store)
        source = work / "checkpoint.bin"
        _write_checkpoint(source, size)
        key = "jobs/bench/checkpoints/checkpoint_000000/model.pt"

        def ours_write() -> None:
            store.put_file(key, source)

        def ours_read() -> None:
            store.get_file(key, work / "ours.bin")

        def base_write() -> None:
            client.upload_file(str(source), bucket, f"baseline/{key}")

        def base_read() -> None:
            client.download_file(bucket, f"baseline/{key}", str(work / "baseline.bin"))

        # Warm both clients (connections, credential lookup) outside the timings.
        store.put_bytes("warmup", b"x")
        client.put_object(Bucket=bucket, Key="warmup", Body=b"x")

        for round_ in range(repeats):
            sides = [("ours", ours_write, ours_read), ("baseline", base_write, base_read)]
            if round_ % 2:
                sides.reverse()
            for side, write, _read in sides:
                timings["write"][side].append(_timed(write))
            for side, _write, read in sides:
                timings["read"][side].append(_timed(read))
            for name in ("ours.bin", "baseline.bin"):
                (work / name).unlink()
            # Keep the server's memory flat across rounds.
            store.delete_prefix("jobs")
            client.delete_object(Bucket=bucket, Key=f"baseline/{key}")

    rows = []
    for operation, sides_timings in timings.items():
        ours = size / MB / statistics.median(sides_timings["ours"])
        baseline = size / MB / statistics.median(sides_timings["baseline"])
        rows.append(
            {
                "name": f"{operation} {size_mb}MB",
                "ours_mb_s": ours,
                "baseline_mb_s": baseline,
                "ratio": ours / baseline,
                "goal": GOAL,
                "ok": ours / baseline >= GOAL,
                "repeats": repeats,
                "ours_samples_mb_s": [size / MB / t for t in sides_timings["ours"]],
                "baseline_samples_mb_s": [size / MB / t for t in sides_timings["baseline"]],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = results(args.size_mb, args.repeats)
    print(f"{'name':<14}{'ours MB/s':>12}{'baseline MB/s':>15}{'ratio':>8}  goal(>={GOAL})")
    for row in rows:
        verdict = "ok" if row["ok"] else "MISSED"
        print(
            f"{row['name']:<14}{row['ours_mb_s']:>12.1f}{row['baseline_mb_s']:>15.1f}"
            f"{row['ratio']:>8.2f}  {verdict}"
        )


if __name__ == "__main__":
    main()
