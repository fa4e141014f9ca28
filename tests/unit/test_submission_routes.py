"""Submission is the one way a job is created: no route plans, checks a budget or inserts a job
itself (integration/test_submission.py drives the service through the routes)."""

from __future__ import annotations

import ast
from pathlib import Path

import trainyard.api

# Calls a route must leave to `trainyard.platform.submission`.
SERVICE_ONLY = {"plan", "estimate", "plan_dict", "option_dict", "check_budget", "create_job"}


def test_routes_leave_planning_budgets_and_the_insert_to_the_submission_service() -> None:
    root = Path(trainyard.api.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            if node.func.attr in SERVICE_ONLY and not (
                isinstance(owner, ast.Name) and owner.id == "submission"
            ):
                offenders.append(f"{path.relative_to(root)}:{node.lineno} .{node.func.attr}(...)")
    assert offenders == []
