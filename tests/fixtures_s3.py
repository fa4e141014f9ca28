"""S3 fixtures: a real moto server over HTTP, the AWS environment pointing at it, and fresh buckets.

- ``s3_server`` (session): starts ``moto.server`` in a subprocess on 127.0.0.1 and a free port and
  yields its endpoint URL. A subprocess, so that Ray workers and pyarrow's S3 client in other
  processes reach it like any S3 endpoint.
- ``s3_env`` (session): points the standard AWS variables at that server for the whole session
  (restored at the end) and yields them. Session scope on purpose: a Ray instance shared by the
  session inherits the environment it was started with, so the variables must not change under it.
  It also hides ~/.aws files and disables the EC2 metadata lookup so a developer's profile can
  neither leak in nor stall pyarrow.
- ``s3_client`` (session): a boto3 S3 client for that server, to set up or inspect objects directly.
- ``s3_bucket`` (function): creates a fresh bucket and returns ``s3://<bucket>/<prefix>``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from trainyard.testing.moto import start_moto_server

__all__ = ["s3_bucket", "s3_client", "s3_env", "s3_server"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    server = start_moto_server("127.0.0.1")
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_env(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    no_aws_files = tmp_path_factory.mktemp("aws") / "absent"
    values = {
        "AWS_ENDPOINT_URL_S3": s3_server,
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(no_aws_files),
        "AWS_SHARED_CREDENTIALS_FILE": str(no_aws_files),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    patch = pytest.MonkeyPatch()
    try:
        for name in (
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        ):
            patch.delenv(name, raising=False)
        for name, value in values.items():
            patch.setenv(name, value)
        yield values
    finally:
        patch.undo()


@pytest.fixture(scope="session")
def s3_client(s3_env: dict[str, str]) -> Any:
    import boto3

    return boto3.session.Session().client("s3")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"trainyard-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return f"s3://{name}/store"
