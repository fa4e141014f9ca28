"""The Trainyard Python SDK.

    from trainyard.sdk import Trainyard

    client = Trainyard()  # TRAINYARD_BASE_URL / TRAINYARD_API_KEY, or the saved credentials
    job = client.jobs.create(name="ft", base_model="gpt2", training_file="s3://data/train.jsonl")
    job = client.jobs.wait(job.id, on_progress=lambda j: print(j.status, j.progress.step))

It depends on httpx and pydantic only, never on the server's packages.
"""

from __future__ import annotations

from trainyard.sdk._base import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from trainyard.sdk._budgets import TeamBudget
from trainyard.sdk._client import AsyncTrainyard, Trainyard
from trainyard.sdk._credentials import (
    DEFAULT_BASE_URL,
    Credentials,
    credentials_path,
    load_credentials,
    save_credentials,
)
from trainyard.sdk._errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    TrainyardError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from trainyard.sdk._files import FileDeleted, FileObject
from trainyard.sdk._models import (
    SETTLED_STATUSES,
    TERMINAL_STATUSES,
    Checkpoint,
    CostBucket,
    CostMetrics,
    CostReport,
    CostRow,
    CostWindow,
    Estimate,
    EstimateOption,
    InstanceType,
    Job,
    JobCost,
    JobError,
    JobEvent,
    JobGoodput,
    JobProgress,
    JobResult,
    Model,
    Page,
    Plan,
    PlanAlternative,
    PoolOption,
    QueueAlternative,
    QueueAnswer,
    QueueMove,
    QueuePool,
    QueueSummary,
    SweepTrial,
)
from trainyard.sdk._pagination import AsyncPaginator, SyncPaginator
from trainyard.sdk._results import (
    CostReportAttempt,
    CostReportEstimate,
    CostReportTotals,
    JobCostReport,
    ModelFile,
    ModelFiles,
)
from trainyard.sdk._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "SETTLED_STATUSES",
    "TERMINAL_STATUSES",
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncPaginator",
    "AsyncTrainyard",
    "AuthenticationError",
    "BadRequestError",
    "Checkpoint",
    "ConflictError",
    "CostBucket",
    "CostMetrics",
    "CostReport",
    "CostReportAttempt",
    "CostReportEstimate",
    "CostReportTotals",
    "CostRow",
    "CostWindow",
    "Credentials",
    "Estimate",
    "EstimateOption",
    "FileDeleted",
    "FileObject",
    "InstanceType",
    "InternalServerError",
    "Job",
    "JobCost",
    "JobCostReport",
    "JobError",
    "JobEvent",
    "JobGoodput",
    "JobProgress",
    "JobResult",
    "Model",
    "ModelFile",
    "ModelFiles",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Plan",
    "PlanAlternative",
    "PoolOption",
    "QueueAlternative",
    "QueueAnswer",
    "QueueMove",
    "QueuePool",
    "QueueSummary",
    "RateLimitError",
    "SweepTrial",
    "SyncPaginator",
    "TeamBudget",
    "Trainyard",
    "TrainyardError",
    "UnprocessableEntityError",
    "WaitTimeoutError",
    "__version__",
    "credentials_path",
    "load_credentials",
    "save_credentials",
]
