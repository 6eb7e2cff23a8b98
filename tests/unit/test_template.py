"""The SAM template as a reviewer would check it before a production deploy: every alarm that catches
silent loss exists and notifies, logs expire, the Lambda outlives the API's wait, and the API never
lets through more requests than reserved concurrency serves, with the template's defaults and with
each samconfig.toml environment. The template is read with its CloudFormation tags; conditions and
``!If`` are evaluated for the parameters at hand."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.support import ROOT

TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"
CONNECTOR = ROOT / "clients" / "typescript" / "src" / "connector.ts"


class _CfnLoader(yaml.SafeLoader):
    """YAML with the short CloudFormation tags, each read as its long form (``!Ref X`` -> ``{"Ref": X}``)."""


def _tag(name: str) -> Any:
    key = "Ref" if name == "Ref" else "Condition" if name == "Condition" else f"Fn::{name}"

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {key: value}

    return construct


for _name in ("Ref", "Sub", "If", "GetAtt", "Equals", "Not", "And", "Or", "Join", "Condition", "Select", "Split"):
    _CfnLoader.add_constructor(f"!{_name}", _tag(_name))

DOC: dict[str, Any] = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)
RESOURCES: dict[str, Any] = DOC["Resources"]
PARAMETERS: dict[str, Any] = DOC["Parameters"]


def _of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == kind}


ALARMS = _of_type("AWS::CloudWatch::Alarm")


def _environments() -> dict[str, dict[str, str]]:
    """Parameter values per samconfig.toml environment (template defaults for the ones not set)."""
    config = tomllib.loads(SAMCONFIG.read_text(encoding="utf-8"))
    defaults = {name: str(p.get("Default", "")) for name, p in PARAMETERS.items()}
    out = {"template defaults": defaults}
    for env, sections in config.items():
        if not isinstance(sections, dict) or "deploy" not in sections:
            continue
        overrides = sections["deploy"]["parameters"].get("parameter_overrides", [])
        pairs = dict(item.split("=", 1) for item in overrides)
        out[env] = {**defaults, **pairs}
    return out


class _Evaluator:
    """Evaluates ``Ref``, ``Fn::If``, ``Fn::Equals`` ... over one set of parameter values."""

    def __init__(self, params: dict[str, str]) -> None:
        self.params = params

    def condition(self, name: str) -> bool:
        return bool(self.value(DOC["Conditions"][name]))

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.params.get(arg, arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::If":
                name, yes, no = arg
                return self.value(yes if self.condition(name) else no)
            if key == "Fn::Equals":
                return str(self.value(arg[0])) == str(self.value(arg[1]))
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(a) for a in arg)
            if key == "Fn::Or":
                return any(self.value(a) for a in arg)
            if key == "Fn::Join":
                return arg[0].join(str(self.value(a)) for a in self.value(arg[1]))
        return node


def _alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """Each metric an alarm reads: namespace, name and dimensions (single metric or metric math)."""
    props = alarm["Properties"]
    if "MetricName" in props:
        return [{"Namespace": props["Namespace"], "MetricName": props["MetricName"], "Dimensions": props["Dimensions"]}]
    return [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]


def _dimensions(metric: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def _alarms_reading(metric_name: str, **dimensions: Any) -> list[str]:
    return [
        name
        for name, alarm in ALARMS.items()
        if any(
            m["MetricName"] == metric_name and all(_dimensions(m).get(k) == v for k, v in dimensions.items())
            for m in _alarm_metrics(alarm)
        )
    ]


def test_every_alarm_notifies_the_alarm_topic_on_alarm_and_on_ok() -> None:
    # Given / When the template's alarms are read
    assert len(ALARMS) >= 10
    for name, alarm in ALARMS.items():
        props = alarm["Properties"]
        # Then each notifies AlarmTopicArn (when set) both ways and treats no traffic as fine
        expected = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        assert props["AlarmActions"] == expected, name
        assert props["OKActions"] == expected, name
        assert props["TreatMissingData"] == "notBreaching", name


@pytest.mark.parametrize("code", ["SCHEMA_MISMATCH", "UNAUTHORIZED"])
def test_rejected_transactions_are_alarmed_for_each_code_that_means_a_misconfiguration(code: str) -> None:
    # Given / When the alarms reading the function's TransactionsRejected metric for that code
    found = _alarms_reading("TransactionsRejected", ErrorCode=code, service={"Ref": "AWS::StackName"})
    # Then there is one, on the namespace the function writes to
    assert found, f"no alarm on TransactionsRejected with ErrorCode={code}"
    metric = next(m for m in _alarm_metrics(ALARMS[found[0]]) if _dimensions(m).get("ErrorCode") == code)
    assert (
        metric["Namespace"]
        == RESOURCES["UploadFunction"]["Properties"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    )


def test_the_rejected_transaction_rate_over_all_codes_is_alarmed() -> None:
    # Given / When the rejected-rate alarm is read
    alarm = ALARMS["RejectedRateAlarm"]["Properties"]
    names = {m["MetricName"] for m in _alarm_metrics(ALARMS["RejectedRateAlarm"])}
    # Then it divides rejected by all transactions (applied + rejected)
    assert names == {"TransactionsRejected", "TransactionsApplied"}
    expression = next(m["Expression"] for m in alarm["Metrics"] if m.get("ReturnData"))
    assert "rejected" in str(expression) and "applied" in str(expression)


def test_401_answers_are_counted_from_the_access_log_and_alarmed() -> None:
    # Given the access log metric filter and the 401 alarm
    (flt,) = _of_type("AWS::Logs::MetricFilter").values()
    props = flt["Properties"]
    transformation = props["MetricTransformations"][0]
    # Then the filter reads the API's access log, every 4xx, by service (the stack) and status
    assert props["LogGroupName"] == {"Ref": "ApiAccessLogs"}
    assert props["FilterPattern"] == '{ $.status = "4*" }'
    assert {d["Key"]: d["Value"] for d in transformation["Dimensions"]} == {
        "service": "$.service",
        "status": "$.status",
    }
    access_format = RESOURCES["UploadApi"]["Properties"]["AccessLogSettings"]["Format"]["Fn::Sub"]
    assert '"service":"${AWS::StackName}"' in access_format
    assert '"status":"$context.status"' in access_format
    # And an alarm reads that metric for status 401
    found = _alarms_reading(transformation["MetricName"], status="401", service={"Ref": "AWS::StackName"})
    assert found
    metric = next(m for m in _alarm_metrics(ALARMS[found[0]]) if m["MetricName"] == transformation["MetricName"])
    assert metric["Namespace"] == transformation["MetricNamespace"]


def test_the_4xx_and_5xx_rates_of_the_api_are_alarmed() -> None:
    # Given / When the alarms on API Gateway's own metrics are read
    for metric in ("4xx", "5xx"):
        # Then each rate divides by the request count of this API's stage
        found = _alarms_reading(metric, ApiId={"Ref": "UploadApi"}, Stage="$default")
        assert found, metric
        assert "Count" in {m["MetricName"] for m in _alarm_metrics(ALARMS[found[0]])}


def test_the_alarms_read_the_metrics_the_function_writes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from powersync_upload import observability
    from powersync_upload.contract import Operation, Transaction
    from powersync_upload.engine import Outcome
    from powersync_upload.errors import ErrorCode, FatalOpError

    # Given the function's environment as the template sets it, for a stack named "prod-stack"
    env = RESOURCES["UploadFunction"]["Properties"]["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == {"Ref": "AWS::StackName"}
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "prod-stack")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    transaction = Transaction((Operation("PUT", "lists", "x", {}),))
    fatal = [(0, transaction, FatalOpError(code), 0) for code in (ErrorCode.SCHEMA_MISMATCH, ErrorCode.UNAUTHORIZED)]
    # When one request's metrics are written
    observability.record(Outcome(results=[], committed=1, fatal=fatal), 3, 5.0, errors_table=True)
    observability.flush()
    written: set[tuple[str, str, frozenset[tuple[str, str]]]] = set()
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            dims = frozenset((d, document[d]) for d in directive["Dimensions"][0])
            for metric in directive["Metrics"]:
                written.add((directive["Namespace"], metric["Name"], dims))
    # Then every PowerSyncUpload metric an alarm reads (with its dimensions) is among them
    for name, alarm in ALARMS.items():
        for metric in _alarm_metrics(alarm):
            if metric["Namespace"] != env["POWERTOOLS_METRICS_NAMESPACE"] or metric["MetricName"] == "ApiClientErrors":
                continue
            dims = _dimensions(metric)
            assert dims.pop("service") == {"Ref": "AWS::StackName"}, name
            wanted = frozenset({("service", "prod-stack"), *dims.items()})
            assert (metric["Namespace"], metric["MetricName"], wanted) in written, name


def test_the_function_and_access_logs_expire() -> None:
    # Given / When the log groups are read
    groups = _of_type("AWS::Logs::LogGroup")
    function = RESOURCES["UploadFunction"]["Properties"]
    # Then the function writes to a log group of the stack's, and both groups have a retention
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": "FunctionLogs"}
    assert groups["FunctionLogs"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert groups["ApiAccessLogs"]["Properties"]["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}
    for parameter in ("LogRetentionDays", "AccessLogRetentionDays"):
        assert int(PARAMETERS[parameter]["Default"]) in PARAMETERS[parameter]["AllowedValues"]


def test_the_lambda_timeout_is_above_the_api_integration_timeout_and_the_deadline_below_it() -> None:
    # Given the routes' integration timeouts and the function's timeout parameter
    events = RESOURCES["UploadFunction"]["Properties"]["Events"]
    integration_s = max(e["Properties"]["TimeoutInMillis"] for e in events.values()) / 1000
    assert RESOURCES["UploadFunction"]["Properties"]["Timeout"] == {"Ref": "FunctionTimeout"}
    timeout = PARAMETERS["FunctionTimeout"]
    deadline = PARAMETERS["DeadlineSeconds"]
    # Then no allowed Lambda timeout is at or below the integration timeout, and no allowed deadline reaches it
    assert integration_s == 30
    assert timeout["MinValue"] > integration_s and timeout["Default"] > integration_s
    assert deadline["MaxValue"] < integration_s and deadline["Default"] < integration_s


@pytest.mark.parametrize("environment", sorted(_environments()))
def test_route_throttling_never_lets_through_more_than_reserved_concurrency_serves(environment: str) -> None:
    # Given an environment's parameters (the template defaults, or a samconfig.toml environment)
    params = _environments()[environment]
    evaluate = _Evaluator(params)
    function = RESOURCES["UploadFunction"]["Properties"]
    settings = RESOURCES["UploadApi"]["Properties"]["DefaultRouteSettings"]
    # When the deployed values are worked out
    reserved = evaluate.value(function["ReservedConcurrentExecutions"])
    burst = int(evaluate.value(settings["ThrottlingBurstLimit"]))
    rate = float(evaluate.value(settings["ThrottlingRateLimit"]))
    # Then concurrency is reserved (it caps database sessions) and the route's limits stay within it,
    # so excess requests get API Gateway's 429 (retried) rather than Lambda's throttle (a bare 500)
    assert reserved != {"Ref": "AWS::NoValue"}, f"{environment}: no reserved concurrency"
    assert burst <= int(reserved), f"{environment}: burst {burst} > reserved concurrency {reserved}"
    assert rate <= int(reserved), f"{environment}: rate {rate}/s > reserved concurrency {reserved}"


def test_the_connectors_default_byte_budget_fits_lambdas_event_limit_whatever_the_content() -> None:
    from powersync_upload.events import LAMBDA_EVENT_LIMIT
    from powersync_upload.settings import Settings

    # Given the connector's default maxRequestBytes (a number, or a constant naming one)
    source = CONNECTOR.read_text(encoding="utf-8")
    match = re.search(r"maxRequestBytes:\s*([\w]+)\s*[,}\n]", source)
    assert match, "connector default maxRequestBytes not found"
    value = match.group(1)
    if not value[0].isdigit():
        constant = re.search(rf"\b{value}\s*(?::\s*\w+\s*)?=\s*([\d_]+)", source)
        assert constant, f"the value of {value} not found"
        value = constant.group(1)
    budget = int(value.replace("_", ""))
    # Then even at JSON escaping's worst (6 bytes per byte, \u0001) plus 64 KiB of headers and claims,
    # its requests fit Lambda's limit and the body cap, so a default batch never meets a 413
    assert 6 * budget + 64 * 1024 < LAMBDA_EVENT_LIMIT
    assert budget < Settings().max_body_bytes
    assert budget < int(PARAMETERS["MaxBodyBytes"]["Default"])


def test_the_smallest_memory_allowed_holds_a_request_at_the_body_cap() -> None:
    # Given the peak RSS measured by `make bench-memory` for a body at the cap (4.5 MiB of PATCHes): ~110 MiB
    measured_peak_mib = 110
    # Then the template refuses a memory size that leaves less than 30 MiB above it
    memory = PARAMETERS["MemorySize"]
    assert memory["MinValue"] >= measured_peak_mib + 30


@pytest.mark.parametrize(("snapstart", "apply_on"), [("false", "None"), ("true", "PublishedVersions")])
def test_snapstart_is_opt_in_on_published_versions_of_a_python_312_runtime(snapstart: str, apply_on: str) -> None:
    # Given the template's defaults, with the SnapStart parameter set
    params = {name: str(p.get("Default", "")) for name, p in PARAMETERS.items()}
    assert params["SnapStart"] == "false"  # off unless asked for
    evaluate = _Evaluator({**params, "SnapStart": snapstart})
    function = RESOURCES["UploadFunction"]["Properties"]
    # When the function's properties are evaluated
    applied = evaluate.value(function["SnapStart"]["ApplyOn"])
    # Then SnapStart applies to published versions only when asked, versions are published behind an
    # alias, the runtime supports it (python3.12+), and nothing it cannot be combined with is set
    assert applied == apply_on
    assert function["AutoPublishAlias"] == "live"
    major, minor = (int(part) for part in function["Runtime"].removeprefix("python").split("."))
    assert (major, minor) >= (3, 12)
    assert "ProvisionedConcurrencyConfig" not in function
