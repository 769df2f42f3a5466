"""apes-otlp-emit (otel_collector, entry point emitter): payloads, parsing, and what it does with a collector."""

from __future__ import annotations

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from role_scripts import load_role_script

emit = load_role_script("otel_collector", "apes-otlp-emit")
NOW = 1_764_633_600_000_000_000


def test_parse_gauge_with_labels_and_escapes():
    gauge = emit.parse_gauge('apes_aide_differences{kind="added",path="a \\"b\\""}=3')
    assert gauge == {"name": "apes_aide_differences", "value": 3, "attributes": {"kind": "added", "path": 'a "b"'}}


def test_parse_gauge_plain_and_float():
    assert emit.parse_gauge("apes_lynis_hardening_index=82") == {
        "name": "apes_lynis_hardening_index",
        "value": 82,
        "attributes": {},
    }
    assert emit.parse_gauge("ratio=0.5")["value"] == 0.5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("=1", "expected NAME"),
        ("a{b=1}=2", "bad label"),
        ('a{b="1"=2', "unterminated"),
        ("a 1", "expected '='"),
        ("a=many", "is not a number"),
        ("a=nan", "not a finite number"),
        ("a=inf", "not a finite number"),
    ],
)
def test_parse_gauge_refuses_bad_specs(spec, message):
    with pytest.raises(emit.InputError, match=message):
        emit.parse_gauge(spec)


def test_parse_log_severity_prefix():
    assert emit.parse_log("WARN:disk almost full") == {"severity": "WARN", "body": "disk almost full"}
    assert emit.parse_log("warning: x") == {"severity": "warning", "body": "x"}
    # A colon that is not after a severity belongs to the text.
    assert emit.parse_log("aide: 3 files changed") == {"severity": "INFO", "body": "aide: 3 files changed"}


def test_metrics_payload_merges_points_of_one_name_and_types_values():
    payload = emit.metrics_payload(
        [
            {"name": "m", "value": 1, "attributes": {"kind": "added"}, "unit": "1", "description": "d"},
            {"name": "m", "value": 2.5, "attributes": {"kind": "removed"}, "time": 1.5},
        ],
        {"service.name": "aide", "host.name": "db1"},
        NOW,
    )
    resource_metrics = payload["resourceMetrics"][0]
    assert resource_metrics["resource"]["attributes"] == [
        {"key": "host.name", "value": {"stringValue": "db1"}},
        {"key": "service.name", "value": {"stringValue": "aide"}},
    ]
    metrics = resource_metrics["scopeMetrics"][0]["metrics"]
    assert [m["name"] for m in metrics] == ["m"]
    assert metrics[0]["unit"] == "1"
    assert metrics[0]["description"] == "d"
    points = metrics[0]["gauge"]["dataPoints"]
    assert points[0]["asInt"] == "1"
    assert points[0]["timeUnixNano"] == str(NOW)
    assert points[0]["attributes"] == [{"key": "kind", "value": {"stringValue": "added"}}]
    assert points[1]["asDouble"] == 2.5
    assert points[1]["timeUnixNano"] == "1500000000"
    assert resource_metrics["scopeMetrics"][0]["scope"]["name"] == "apes-otlp-emit"


@pytest.mark.parametrize(
    ("gauge", "message"),
    [
        ({"name": "m"}, "needs 'name' and 'value'"),
        ({"name": "9m", "value": 1}, "gauge name"),
        ({"name": "m", "value": True}, "is not a number"),
        ({"name": "m", "value": 1, "attributes": ["a"]}, "attributes must be a mapping"),
    ],
)
def test_metrics_payload_refuses_bad_gauges(gauge, message):
    with pytest.raises(emit.InputError, match=message):
        emit.metrics_payload([gauge], {}, NOW)


def test_attribute_value_types():
    kv = emit._key_values({"b": True, "i": 3, "f": 0.25, "s": "x", "l": [1, "a"], "n": None})
    assert {item["key"]: item["value"] for item in kv} == {
        "b": {"boolValue": True},
        "f": {"doubleValue": 0.25},
        "i": {"intValue": "3"},
        "l": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "a"}]}},
        "n": {"stringValue": ""},
        "s": {"stringValue": "x"},
    }


def test_logs_payload_severity_numbers_and_aliases():
    payload = emit.logs_payload(
        [{"severity": "warning", "body": "w", "attributes": {"test": "PKGS-7392"}}, {"body": "i", "time": 2}],
        {"service.name": "lynis"},
        NOW,
    )
    records = payload["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert (records[0]["severityText"], records[0]["severityNumber"]) == ("WARN", 13)
    assert records[0]["body"] == {"stringValue": "w"}
    assert records[0]["observedTimeUnixNano"] == str(NOW)
    assert (records[1]["severityText"], records[1]["severityNumber"]) == ("INFO", 9)
    assert records[1]["timeUnixNano"] == "2000000000"


def test_logs_payload_refuses_unknown_severity_and_missing_body():
    with pytest.raises(emit.InputError, match="log severity 'LOUD'"):
        emit.logs_payload([{"severity": "LOUD", "body": "x"}], {}, NOW)
    with pytest.raises(emit.InputError, match="needs 'body'"):
        emit.logs_payload([{"severity": "INFO"}], {}, NOW)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "must be an object"),
        ('{"gauge": []}', "unknown keys gauge"),
        ('{"gauges": {}}', "'gauges' must be a list"),
        ('{"resource": []}', "'resource' must be a mapping"),
    ],
)
def test_load_document_refuses_bad_input(text, message):
    with pytest.raises(emit.InputError, match=message):
        emit.load_document(text)


class _Collector:
    """A local OTLP/HTTP receiver that records what it gets and answers with a chosen status."""

    def __init__(self, status: int = 200, answer: bytes = b"{}"):
        self.requests: list[tuple[str, str, dict]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                collector.requests.append((self.path, self.headers["Content-Type"], body))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_main_sends_metrics_and_logs_to_their_paths(capsys):
    with _Collector() as collector:
        status = emit.main(
            [
                "--endpoint",
                collector.endpoint + "/",
                "--service",
                "lynis",
                "--resource",
                "host.name=db1",
                "--gauge",
                "apes_lynis_hardening_index=81",
                "--log",
                "WARN:vulnerable packages",
            ]
        )
    assert status == 0, capsys.readouterr().err
    paths = [(path, content_type) for path, content_type, _body in collector.requests]
    assert paths == [("/v1/metrics", "application/json"), ("/v1/logs", "application/json")]
    metrics = collector.requests[0][2]["resourceMetrics"][0]
    assert {a["key"]: a["value"]["stringValue"] for a in metrics["resource"]["attributes"]} == {
        "host.name": "db1",
        "service.name": "lynis",
    }
    point = metrics["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]
    assert point["asInt"] == "81"
    assert collector.requests[1][2]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["severityText"] == "WARN"


def test_main_reads_a_json_document_from_stdin(monkeypatch):
    document = {"resource": {"service.name": "aide"}, "gauges": [{"name": "apes_aide_entries", "value": 5}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(document)))
    with _Collector() as collector:
        assert emit.main(["--endpoint", collector.endpoint, "--json", "-"]) == 0
    assert [path for path, _type, _body in collector.requests] == ["/v1/metrics"]


def test_main_fails_softly_when_no_collector_listens(capsys):
    # A bound socket that does not listen refuses connections: a port nothing answers on.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        status = emit.main(["--endpoint", f"http://127.0.0.1:{port}", "--gauge", "a=1", "--gauge", "b=2"])
    assert status == emit.EX_TEMPFAIL
    err = capsys.readouterr().err
    assert f"no OpenTelemetry collector answers at http://127.0.0.1:{port}/v1/metrics" in err
    assert "2 gauges not sent" in err


def test_main_reports_a_refusing_collector(capsys):
    with _Collector(status=400, answer=b'{"message": "bad"}') as collector:
        status = emit.main(["--endpoint", collector.endpoint, "--log", "x"])
    assert status == emit.EX_PROTOCOL
    assert "refused 1 log record: HTTP 400" in capsys.readouterr().err


def test_main_warns_about_partial_success(capsys):
    answer = json.dumps({"partialSuccess": {"rejectedDataPoints": "1", "errorMessage": "x"}}).encode()
    with _Collector(answer=answer) as collector:
        assert emit.main(["--endpoint", collector.endpoint, "--gauge", "a=1"]) == 0
    assert "accepted 1 gauge only in part" in capsys.readouterr().err


def test_main_endpoint_from_environment(monkeypatch, capsys):
    with _Collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        assert emit.main(["--gauge", "a=1"]) == 0
    assert len(collector.requests) == 1


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--gauge", "a=x"], 65, "is not a number"),
        ([], 65, "nothing to send"),
        (["--endpoint", "ftp://x", "--gauge", "a=1"], 2, "must be an http:// or https:// URL"),
        (["--json", "/nonexistent/file"], 65, "No such file"),
        (["--resource", "novalue", "--gauge", "a=1"], 65, "expected KEY=VALUE"),
    ],
)
def test_main_refuses_bad_input_before_sending(argv, status, message, capsys):
    assert emit.main(argv) == status
    assert message in capsys.readouterr().err


def test_dry_run_prints_the_requests(capsys):
    assert emit.main(["--endpoint", "http://127.0.0.1:1", "--gauge", "a=1", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["url"] == "http://127.0.0.1:1/v1/metrics"
    assert printed["payload"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["name"] == "a"
