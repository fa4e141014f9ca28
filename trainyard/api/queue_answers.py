"""How a queue answer looks on the wire: the platform's answer, and with each alternative the
request and the command that move the job there."""

from __future__ import annotations

import shlex
from typing import Any

from fastapi import Request

from trainyard.platform.costs.metering import PaceRule
from trainyard.platform.queue.answers import QueueAnswer


def pace(request: Request) -> PaceRule:
    """When a running job's training pace is trusted, from the app's settings."""
    return PaceRule.from_settings(request.app.state.settings)


def move_body(instance_type: str, spot: bool) -> dict[str, Any]:
    return {"instance_type": instance_type, "spot": spot}


def queue_out(answer: QueueAnswer | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    out = answer.to_dict()
    job = answer.job_id
    for alt in out["alternatives"]:
        alt["move"] = {
            "method": "POST",
            "path": f"/v1/jobs/{job}/move",
            "body": move_body(alt["instance_type"], alt["spot"]),
        }
        alt["command"] = " ".join(
            [
                "trainyard jobs move",
                shlex.quote(job),
                "--instance-type",
                shlex.quote(alt["instance_type"]),
                "--spot" if alt["spot"] else "--on-demand",
            ]
        )
    return out
