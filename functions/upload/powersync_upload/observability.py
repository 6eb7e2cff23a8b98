"""Metrics of applied uploads, as CloudWatch embedded metric format (EMF) through Powertools Metrics.

Namespace ``PowerSyncUpload`` (``POWERTOOLS_METRICS_NAMESPACE`` overrides), dimension ``service``
(``POWERTOOLS_SERVICE_NAME``; deployed, the stack name, so each stack's alarms read its own metrics;
default ``powersync-upload``):

* ``TransactionsApplied`` (Count): committed transactions;
* ``TransactionsRejected`` (Count): fatal results, also per ``ErrorCode`` dimension;
* ``RetryableFailures`` (Count): requests stopped by a temporary failure (the client retries);
* ``OperationsPerRequest`` (Count): CrudEntries in the request;
* ``ApplyDurationMs`` (Milliseconds): time in the engine (conversion, SQL and commits);
* ``ErrorsNotRecorded`` (Count): fatal results the errors table could not store.

Only counts, durations and error codes are emitted: never names or values from a request. The local
commands and the tests turn metrics off (``POWERTOOLS_METRICS_DISABLED``) unless asked for.

Each request ends with one log line named by its outcome (:func:`outcome_message`): "upload applied"
only when everything committed, never for a 503.

Powertools Metrics is imported on the first upload, not at cold start (it costs ~40 ms of import),
and :func:`flush` writes the request's metrics when the handler returns.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

from .contract import RetryableResult
from .outcome import Outcome

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "PowerSyncUpload")


DEFAULT_SERVICE = "powersync-upload"


def service() -> str:
    """The ``service`` dimension of every metric: ``POWERTOOLS_SERVICE_NAME``, else ``powersync-upload``."""
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE


@lru_cache(maxsize=1)
def _metrics_for(service_name: str) -> Metrics:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace=NAMESPACE, service=service_name)


def _metrics() -> Metrics:
    return _metrics_for(service())


_pending = False


def flush() -> None:
    """Write the metrics added during this invocation (no-op when none were)."""
    global _pending
    if _pending:
        _pending = False
        _metrics().flush_metrics()


def record(outcome: Outcome, operations: int, duration_ms: float, errors_table: bool) -> None:
    """Add one request's metrics; :func:`flush` writes them when the handler returns. Nothing is
    added while metrics are disabled (Powertools would keep them, unflushed, for the process's life)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    global _pending
    if is_metrics_disabled():
        return
    _pending = True

    metrics = _metrics()
    metrics.add_metric(name="TransactionsApplied", unit=MetricUnit.Count, value=outcome.committed)
    metrics.add_metric(name="TransactionsRejected", unit=MetricUnit.Count, value=len(outcome.fatal))
    metrics.add_metric(name="RetryableFailures", unit=MetricUnit.Count, value=int(outcome.retry_after_ms is not None))
    metrics.add_metric(name="OperationsPerRequest", unit=MetricUnit.Count, value=operations)
    metrics.add_metric(name="ApplyDurationMs", unit=MetricUnit.Milliseconds, value=round(duration_ms, 1))
    if errors_table and outcome.fatal:
        missed = len(outcome.fatal) - outcome.recorded
        metrics.add_metric(name="ErrorsNotRecorded", unit=MetricUnit.Count, value=missed)
    if outcome.unrecorded_conflicts:
        metrics.add_metric(name="ConflictsNotRecorded", unit=MetricUnit.Count, value=outcome.unrecorded_conflicts)
    if outcome.config_problems:
        metrics.add_metric(name="ConfigurationProblems", unit=MetricUnit.Count, value=outcome.config_problems)
    if outcome.replayed:
        metrics.add_metric(name="TransactionsReplayed", unit=MetricUnit.Count, value=outcome.replayed)
    codes: dict[str, int] = {}
    for _index, _transaction, error, _op in outcome.fatal:
        codes[error.code.value] = codes.get(error.code.value, 0) + 1
    for code, count in codes.items():
        with single_metric(
            name="TransactionsRejected", unit=MetricUnit.Count, value=count, namespace=NAMESPACE
        ) as metric:
            metric.add_dimension(name="service", value=service())
            metric.add_dimension(name="ErrorCode", value=code)


def outcome_message(outcome: Outcome) -> str:
    """The request's closing log line, named by what happened (search the logs by it):

    * ``upload applied``: 200, every transaction committed;
    * ``upload applied with rejections``: 200, some transactions rejected (reverted on the device);
    * ``upload rejected``: 200, no transaction committed, at least one rejected;
    * ``upload partly applied, rest to retry``: 200 (shape A) after a retryable failure that stopped
      the request once something had committed;
    * ``upload not applied, retry``: 503, nothing kept from the failed part; the client sends again.
    """
    if outcome.retry_after_ms is not None:
        return "upload not applied, retry"
    if any(isinstance(r, RetryableResult) for r in outcome.results):
        return "upload partly applied, rest to retry"
    if outcome.fatal:
        return "upload rejected" if outcome.committed == 0 else "upload applied with rejections"
    return "upload applied"
