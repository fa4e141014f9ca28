"""The object store cut by a TCP proxy (every connection dropped, new ones refused) while the
filesystem Ray Train is handed writes: the copy Ray pickles to its controller and workers retries
as the platform's own client does, so a blip of seconds does not fail a checkpoint upload."""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from live import Proxy

from trainyard.platform.storage import S3Store

CUT_SECONDS = 5.0


def test_the_filesystem_ray_gets_retries_through_a_store_cut(
    s3_server: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = urlsplit(s3_server)
    assert upstream.hostname and upstream.port
    proxy = Proxy((upstream.hostname, upstream.port))
    s3_client.create_bucket(Bucket="cut")
    try:
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.setenv(name, proxy.url)
        path, fs = S3Store("cut").ray_storage("jobs/j/attempts/001/checkpoints")
        shipped = pickle.loads(pickle.dumps(fs))  # what Ray Train's controller and workers get
        proxy.cut()
        threading.Timer(CUT_SECONDS, proxy.restore).start()
        started = time.monotonic()
        with shipped.open_output_stream(f"{path}/checkpoint_000000006/state.bin") as out:
            out.write(b"weights" * 1000)
        took = time.monotonic() - started
    finally:
        proxy.close()
    print(f"\nwrite through a {CUT_SECONDS:.0f} s store cut: done in {took:.1f} s, {proxy.refused} refused")
    assert proxy.refused > 0, "the write met the cut"
    key = "jobs/j/attempts/001/checkpoints/checkpoint_000000006/state.bin"
    body = s3_client.get_object(Bucket="cut", Key=key)
    assert body["Body"].read() == b"weights" * 1000
