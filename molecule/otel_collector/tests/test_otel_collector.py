"""Behaviour of the otel_collector role: an agent (PostgreSQL + Redis host) and a gateway.

Every request goes to the scenario's own containers (loopback inside them, or the scenario's Docker
network between them) or to 127.0.0.1 on the test machine (the local release mirror).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import socketserver
import tarfile
import threading
import time
from pathlib import Path

import pytest
import testinfra
import yaml

HERE = Path(__file__).resolve().parent
# The collector alone (the services' roles ran in converge.yml); see the fixture `collector`.
COLLECTOR = HERE / "collector.yml"
AGENT = "apes-otel-collector-agent"
GATEWAY = "apes-otel-collector-gateway"
BINARY = "/usr/bin/otelcol"
CONFIG = "/etc/otelcol/config.yaml"
ENV_FILE = "/etc/otelcol/otelcol.conf"
BACKEND = "/var/lib/otelcol/backend.jsonl"
VERSION = "0.165.0"
# The scenario's inventory (molecule.yml): a Redis monitoring secret that needs quoting.
INVENTORY = yaml.safe_load((HERE.parent / "molecule.yml").read_text())["provisioner"]["inventory"]["group_vars"]["all"]
REDIS_SECRET = INVENTORY["redis_monitoring_password"].replace("$$", "$")  # Molecule's escape for $
PG_SECRET = INVENTORY["postgresql_monitoring_password"]


def _host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


@pytest.fixture(scope="module")
def agent():
    return _host(AGENT)


@pytest.fixture(scope="module")
def gateway():
    return _host(GATEWAY)


def main_pid(h) -> int:
    return int(h.check_output("systemctl show --property=MainPID --value otelcol.service"))


def healthy(h) -> bool:
    return h.run("curl -fsS http://127.0.0.1:13133/").rc == 0


def wait_for(predicate, timeout=60.0, step=1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    hosts = {}
    for line in stdout.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line)
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


def host_changes(stdout: str, name: str) -> int:
    """Tasks that changed something on the host itself (not delegated to the controller)."""
    return len(re.findall(rf"^changed: \[{re.escape(name)}\](?: |$)", stdout, re.M))


def controller_builds() -> list[Path]:
    """The collector builds in the role's default cache (otel_collector_cache_dir)."""
    root = os.environ.get("APES_CACHE") or str(Path(os.environ.get("HOME", "/root")) / ".cache/apes-infra")
    return sorted((Path(root) / "otelcol" / "builds").glob(f"{VERSION}-*/otelcol"))


@pytest.fixture(scope="session")
def published(run_playbook, tmp_path_factory) -> dict:
    """What apes.infra.postgresql and apes.infra.redis published on the agent in a run of their roles
    (tests/published.yml), without the inventory's own variables: the collector's input from them."""
    path = tmp_path_factory.mktemp("published") / "facts.json"
    tags = os.environ.pop("ANSIBLE_RUN_TAGS", None)  # the services' roles run in full
    os.environ["APES_PUBLISHED_FILE"] = str(path)
    try:
        result = run_playbook(HERE / "published.yml")
    finally:
        del os.environ["APES_PUBLISHED_FILE"]
        if tags is not None:
            os.environ["ANSIBLE_RUN_TAGS"] = tags
    assert result.returncode == 0, result.stdout[-3000:]
    facts = {k: v for k, v in json.loads(path.read_text()).items() if k not in INVENTORY}
    assert facts, "the services' roles published nothing"
    return facts


@pytest.fixture(scope="session")
def collector(run_playbook, published):
    """collector(extra_vars=None, limit=None, check=False): the collector role alone, with what the
    services published (extra variables) and the test's own variables on top."""

    def run(extra_vars=None, limit=None, check=False):
        return run_playbook(COLLECTOR, extra_vars={**published, **(extra_vars or {})}, limit=limit, check=check)

    return run


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- install and service ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [AGENT, GATEWAY])
def test_layout_like_the_official_packages(name):
    h = _host(name)
    binary = h.file(BINARY)
    assert binary.user == "root"
    assert binary.mode == 0o755
    config = h.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "otelcol", 0o640)
    assert "Ansible managed" in config.content_string
    env = h.file(ENV_FILE)
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    state = h.file("/var/lib/otelcol")
    assert (state.user, state.mode) == ("otelcol", 0o750)
    user = h.user("otelcol")
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000
    service = h.service("otelcol")
    assert service.is_running
    assert service.is_enabled
    # Runs as the service user, with no capabilities at all.
    pid = main_pid(h)
    status = h.file(f"/proc/{pid}/status").content_string
    assert re.search(r"^Uid:\s+(\d+)", status, re.M).group(1) == str(user.uid)
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert re.search(rf"^{field}:\s+0+$", status, re.M), field


def test_same_verified_binary_everywhere(agent, gateway):
    """The hosts run the binary the controller built (one release, cached by its inputs)."""
    builds = {sha256(path): path for path in controller_builds()}
    assert builds, "no cached build on the controller"
    for h in (agent, gateway):
        assert h.check_output(f"sha256sum {BINARY}").split()[0] in builds
    version = agent.check_output(f"{BINARY} --version")
    assert VERSION in version
    components = agent.check_output(f"{BINARY} components")
    for component in (
        "otlp",
        "host_metrics",
        "file_log",
        "prometheus",
        "memory_limiter",
        "batch",
        "resource",
        "otlp_grpc",
        "otlp_http",
        "debug",
        "file",
        "health_check",
        "file_storage",
    ):
        assert re.search(rf"- name: {re.escape(component)}\n", components), component


@pytest.mark.parametrize("name", [AGENT, GATEWAY])
def test_health_endpoint_answers(name):
    h = _host(name)
    assert wait_for(lambda: healthy(h))
    body = json.loads(h.check_output("curl -fsS http://127.0.0.1:13133/"))
    assert body["status"] == "Server available"


def test_sandbox_rates_at_least_ok(agent):
    out = agent.check_output("systemd-analyze security --no-pager otelcol.service")
    match = re.search(r"Overall exposure level for otelcol\.service: ([\d.]+) (\w+)", out)
    assert match, out[-500:]
    print(f"systemd-analyze security otelcol.service: {match.group(1)} {match.group(2)}")
    assert match.group(2) in ("SAFE", "OK"), match.group(0)
    unit = agent.file("/etc/systemd/system/otelcol.service").content_string
    for line in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "StateDirectory=otelcol",
        "SupplementaryGroups=adm",
    ):
        assert line in unit, line


def test_listening_addresses(agent, gateway):
    # Agent: OTLP for local applications, Prometheus, health and the exporters on loopback only.
    for port in (4317, 4318, 8889, 13133, 9187, 9121):
        assert agent.socket(f"tcp://127.0.0.1:{port}").is_listening, port
        assert not agent.socket(f"tcp://0.0.0.0:{port}").is_listening, port
    # Gateway: OTLP from the agents on all interfaces.
    for port in (4317, 4318):
        assert gateway.socket(f"tcp://0.0.0.0:{port}").is_listening, port


def test_secrets_stay_out_of_config_and_logs(agent):
    config = agent.file(CONFIG).content_string
    assert PG_SECRET not in config
    assert REDIS_SECRET not in config
    for path in ("/etc/default/prometheus-postgres-exporter", "/etc/default/prometheus-redis-exporter"):
        f = agent.file(path)
        assert (f.user, f.mode) == ("root", 0o600), path
    journal = agent.check_output(
        "journalctl --no-pager -u otelcol -u prometheus-redis-exporter -u prometheus-postgres-exporter"
    )
    assert PG_SECRET not in journal
    assert REDIS_SECRET not in journal


def test_environment_file_quoting_reaches_the_exporter_intact(agent):
    """A password with $, quotes and a backslash arrives unchanged (systemd EnvironmentFile quoting)."""
    pid = int(agent.check_output("systemctl show --property=MainPID --value prometheus-redis-exporter.service"))
    environ = agent.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert f"REDIS_PASSWORD={REDIS_SECRET}" in environ.splitlines()


def test_redis_exporter_uses_tls_with_its_own_copy_of_the_client_certificate(agent):
    """Redis is TLS only with client certificates (molecule.yml): the exporter connects to 6380 and
    reads its own copies of the files; Redis's TLS directory stays closed to it."""
    pid = int(agent.check_output("systemctl show --property=MainPID --value prometheus-redis-exporter.service"))
    environ = agent.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
    assert "REDIS_ADDR=rediss://127.0.0.1:6380" in environ
    args = next(line for line in environ if line.startswith("ARGS="))
    assert "--tls-client-cert-file=/etc/prometheus/redis-exporter-tls/client.crt" in args
    key = agent.file("/etc/prometheus/redis-exporter-tls/client.key")
    assert (key.user, key.mode) == ("prometheus", 0o600)
    assert agent.run("runuser -u prometheus -- cat /etc/redis/tls/server.key").rc != 0
    # The plaintext port is closed.
    assert not agent.socket("tcp://0.0.0.0:6379").is_listening
    assert not agent.socket("tcp://127.0.0.1:6379").is_listening


# --- telemetry flows ----------------------------------------------------------------------------


# The gateway creates its backend file on the first flush: until then `cat` fails, and the wait
# goes on (run, not check_output).
def _send_span(agent, trace_id: str) -> None:
    """One span to the agent's OTLP/HTTP receiver on its loopback."""
    span = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "molecule-test"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": secrets.token_hex(8),
                                "name": "molecule-span",
                                "kind": 1,
                                "startTimeUnixNano": str(time.time_ns() - 1_000_000),
                                "endTimeUnixNano": str(time.time_ns()),
                            }
                        ]
                    }
                ],
            }
        ]
    }
    payload = json.dumps(span).replace("'", "'\\''")
    agent.check_output(
        f"curl -fsS -X POST -H 'Content-Type: application/json' -d '{payload}' http://127.0.0.1:4318/v1/traces"
    )


def test_span_over_otlp_http_reaches_the_gateway(agent, gateway):
    trace_id = secrets.token_hex(16)
    _send_span(agent, trace_id)
    assert wait_for(lambda: trace_id in gateway.run(f"cat {BACKEND}").stdout, timeout=60)
    record = next(line for line in gateway.file(BACKEND).content_string.splitlines() if trace_id in line)
    # The agent stamped its host name on the way.
    assert AGENT in record


def _metrics(h) -> str:
    return h.check_output("curl -fsS http://127.0.0.1:8889/metrics")


def _value(text: str, pattern: str) -> float | None:
    match = re.search(rf"^{pattern}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_prometheus_endpoint_has_live_postgresql_redis_and_host_metrics(agent):
    def ready():
        text = _metrics(agent)
        return text if _value(text, "pg_up") == 1 and _value(text, "redis_up") == 1 else None

    first = wait_for(ready, timeout=90, step=2)
    assert first, "pg_up and redis_up never reached 1"
    # PostgreSQL seen through the monitoring user: databases and connections.
    assert re.search(r'^pg_stat_database_numbackends\{[^}]*datname="postgres"', first, re.M)
    # Redis through its read-only ACL user.
    assert _value(first, "redis_uptime_in_seconds") > 0
    # Host metrics, moving between two scrapes.
    cpu = _value(first, "system_cpu_time_seconds_total")
    assert cpu is not None
    assert cpu > 0
    assert _value(first, "system_memory_usage_bytes") > 0
    later = wait_for(
        lambda: (
            (v := _value(_metrics(agent), "redis_uptime_in_seconds"))
            and v > _value(first, "redis_uptime_in_seconds")
            and v
        ),
        timeout=30,
        step=2,
    )
    assert later


def test_postgresql_log_lines_reach_the_gateway(agent, gateway):
    """filelog reads Debian's PostgreSQL log (group adm) from inside the sandbox."""
    marker = f"molecule_marker_{secrets.token_hex(6)}"
    agent.run(f'runuser -u postgres -- psql -c "SELECT 1/0 AS {marker}"')
    assert wait_for(lambda: marker in gateway.run(f"cat {BACKEND}").stdout, timeout=60)


# --- changes: reload, bad config, bad input -----------------------------------------------------


@pytest.fixture
def config_only(monkeypatch):
    """Run only the role's checks and configuration tasks (tag otel_collector_config)."""
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", "otel_collector_config")


@pytest.fixture
def install_only(monkeypatch):
    """Run only the role's checks, artifact and install tasks (tag otel_collector_install)."""
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", "otel_collector_install")


def test_config_change_reloads_without_restart(agent, collector, config_only):
    pid = main_pid(agent)
    layer = {"otel_collector_config_zz_test": {"processors": {"batch": {"timeout": "2s"}}}}
    result = collector(extra_vars=layer, limit=AGENT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout)[AGENT]["changed"] >= 1
    assert "timeout: 2s" in agent.file(CONFIG).content_string
    assert wait_for(lambda: healthy(agent))
    assert main_pid(agent) == pid, "a config change must reload (SIGHUP), not restart"
    # Back to the converged config, again by reload.
    result = collector(limit=AGENT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "timeout: 2s" not in agent.file(CONFIG).content_string
    assert wait_for(lambda: healthy(agent))
    assert main_pid(agent) == pid


def test_invalid_config_fails_and_the_collector_keeps_running(agent, collector, config_only):
    pid = main_pid(agent)
    before = agent.check_output(f"sha256sum {CONFIG}")
    broken = {"otel_collector_config": {"service": {"pipelines": {"traces": {"exporters": ["nonexistent"]}}}}}
    result = collector(extra_vars=broken, limit=AGENT)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert "Write the configuration (validated with `otelcol validate` first)" in output, output[-3000:]
    assert "nonexistent" in output, output[-3000:]
    assert "which is not configured" in output, output[-3000:]
    assert agent.check_output(f"sha256sum {CONFIG}") == before
    assert main_pid(agent) == pid
    assert healthy(agent)


@pytest.mark.parametrize(
    ("extra_vars", "limit", "message"),
    [
        ({"otel_collector_install_method": "ftp"}, None, "otel_collector_install_method"),
        (
            {"otel_collector_install_method": "release", "otel_collector_release_checksum": ""},
            None,
            "otel_collector_release_checksum is mandatory",
        ),
        (
            {"otel_collector_preset_redis": True},
            GATEWAY,
            f"otel_collector_preset_redis is on (host groups: otel_gateway) but redis is not installed on {GATEWAY}",
        ),
        (
            {"otel_collector_preset_postgresql": True},
            GATEWAY,
            "otel_collector_preset_postgresql is on (host groups: otel_gateway) but postgresql is not installed on "
            + GATEWAY,
        ),
        (
            {"otel_collector_tls_enabled": False},
            None,
            "with no client authentication, on 0.0.0.0:4317, 0.0.0.0:4318. Keep otel_collector_tls_enabled",
        ),
    ],
    ids=[
        "unknown-install-method",
        "release-without-checksum",
        "redis-preset-without-redis",
        "postgresql-preset-without-postgresql",
        "plaintext-not-accepted",
    ],
)
def test_bad_input_fails_before_any_change(collector, extra_vars, limit, message):
    result = collector(extra_vars=extra_vars, limit=limit)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert message in output, output[-3000:]
    hosts = recap(result.stdout)
    assert hosts
    assert all(counts["changed"] == 0 for counts in hosts.values()), hosts


# --- release and local methods ------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def release_archive(tmp_path_factory):
    """An archive in the official layout holding the collector this scenario built (built once)."""
    builds = controller_builds()
    assert builds, "no cached build on the controller"
    work = tmp_path_factory.mktemp("release")
    staged = work / "otelcol-contrib"
    shutil.copy2(builds[-1], staged)
    archive = work / f"otelcol-contrib_{VERSION}_linux_amd64.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(staged, arcname="otelcol-contrib")
        tar.add(HERE.parent / "molecule.yml", arcname="README.md")  # archives carry other files too
    return {"archive": archive, "binary_sha256": sha256(staged)}


@pytest.fixture
def release_mirror(tmp_path, release_archive):
    """A local mirror: v<ver>/<archive> and its per-artifact <archive>.sha256, on 127.0.0.1 only."""
    root = tmp_path / "mirror"
    release = root / f"v{VERSION}"
    release.mkdir(parents=True)
    archive = release / release_archive["archive"].name
    os.link(release_archive["archive"], archive)
    (release / (archive.name + ".sha256")).write_text(f"{sha256(archive)}  {archive.name}\n")

    handler = functools.partial(_QuietHandler, directory=str(root))
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "url": f"http://127.0.0.1:{server.server_address[1]}",
            "archive": archive,
            "root": root,
            "binary_sha256": release_archive["binary_sha256"],
        }
    finally:
        server.shutdown()
        server.server_close()


def _release_vars(mirror, cache: Path) -> dict:
    return {
        "otel_collector_install_method": "release",
        "otel_collector_release_base_url": mirror["url"],
        "otel_collector_cache_dir": str(cache),
    }


def test_release_method_downloads_once_verifies_and_installs(agent, collector, release_mirror, tmp_path, install_only):
    pid = main_pid(agent)
    cache = tmp_path / "cache"
    result = collector(extra_vars=_release_vars(release_mirror, cache), limit=AGENT)
    assert result.returncode == 0, result.stdout[-3000:]
    cached = cache / "releases" / VERSION / release_mirror["archive"].name
    assert cached.is_file()
    assert sha256(cached) == sha256(release_mirror["archive"])
    # Same collector as the build: nothing changes on the host.
    assert agent.check_output(f"sha256sum {BINARY}").split()[0] == release_mirror["binary_sha256"]
    assert host_changes(result.stdout, AGENT) == 0  # only the controller's cache changed
    assert main_pid(agent) == pid
    # A second run uses the cache: the mirror may be gone.
    shutil.rmtree(release_mirror["root"])
    again = collector(extra_vars=_release_vars(release_mirror, cache), limit=AGENT)
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout)[AGENT]["changed"] == 0


def test_release_with_a_wrong_checksum_is_refused(agent, collector, release_mirror, tmp_path, install_only):
    sums = release_mirror["archive"].with_name(release_mirror["archive"].name + ".sha256")
    sums.write_text(f"{hashlib.sha256(b'something else').hexdigest()}  {release_mirror['archive'].name}\n")
    before = agent.check_output(f"sha256sum {BINARY}")
    result = collector(extra_vars=_release_vars(release_mirror, tmp_path / "cache"), limit=AGENT)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert "did not match" in output, output[-3000:]
    assert agent.check_output(f"sha256sum {BINARY}") == before
    assert host_changes(result.stdout, AGENT) == 0
    assert not list((tmp_path / "cache").rglob("otelcol-contrib"))


def test_local_method_installs_a_verified_archive(agent, collector, release_mirror, tmp_path, install_only):
    archive = release_mirror["archive"]
    extra = {
        "otel_collector_install_method": "local",
        "otel_collector_local_path": str(archive),
        "otel_collector_local_checksum": f"sha256:{sha256(archive)}",
        "otel_collector_cache_dir": str(tmp_path / "cache"),
    }
    result = collector(extra_vars=extra, limit=AGENT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert agent.check_output(f"sha256sum {BINARY}").split()[0] == release_mirror["binary_sha256"]
    wrong = dict(extra, otel_collector_local_checksum=f"sha256:{'0' * 64}")
    refused = collector(extra_vars=wrong, limit=AGENT)
    assert refused.returncode != 0
    output = " ".join((refused.stdout + refused.stderr).split())
    assert "does not match otel_collector_local_checksum" in output, output[-3000:]


# --- one tag alone, after a change: the running services pick it up ----------------------------


def _environ(h, unit: str) -> list[str]:
    pid = int(h.check_output(f"systemctl show --property=MainPID --value {unit}"))
    return h.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()


def _groups(h) -> set[str]:
    status = h.file(f"/proc/{main_pid(h)}/status").content_string
    return set(re.search(r"^Groups:\s*(.*)$", status, re.M).group(1).split())


@pytest.fixture(scope="module")
def journal_gid(agent) -> str:
    return agent.check_output("getent group systemd-journal").split(":")[2]


TAG_CHANGES = {
    # tag: (variables, the running agent shows the change, a restart is expected)
    "otel_collector_config": (
        {"otel_collector_environment": {"APES_TAG_TEST": "picked-up"}},
        lambda h, _gid: "APES_TAG_TEST=picked-up" in _environ(h, "otelcol.service"),
    ),
    "otel_collector_service": (
        {"otel_collector_supplementary_groups": ["systemd-journal"]},
        lambda h, gid: gid in _groups(h),
    ),
    "otel_collector_exporters": (
        {"otel_collector_postgresql_database": "template1"},
        lambda h, _gid: any(
            line.startswith("DATA_SOURCE_URI=") and "/template1?" in line
            for line in _environ(h, "prometheus-postgres-exporter.service")
        ),
    ),
}


@pytest.mark.parametrize("tag", sorted(TAG_CHANGES))
def test_one_tag_alone_restarts_what_its_change_needs(agent, collector, monkeypatch, tag, journal_gid):
    """A change that needs a restart (the EnvironmentFile, the unit, an exporter's settings), applied by
    running only its tag: the running process has it afterwards, and the same tag alone takes it back.
    The collector comes back healthy; an exporter change leaves the collector alone."""
    variables, picked_up = TAG_CHANGES[tag]
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", tag)
    pid = main_pid(agent)
    assert not picked_up(agent, journal_gid)
    try:
        result = collector(extra_vars=variables, limit=AGENT)
        assert result.returncode == 0, result.stdout[-3000:]
        assert wait_for(lambda: picked_up(agent, journal_gid), timeout=30), f"--tags {tag}: not picked up"
        assert wait_for(lambda: healthy(agent))
        if tag == "otel_collector_exporters":
            assert main_pid(agent) == pid, "an exporter's change must not restart the collector"
    finally:
        back = collector(limit=AGENT)
    assert back.returncode == 0, back.stdout[-3000:]
    assert wait_for(lambda: not picked_up(agent, journal_gid), timeout=30), f"--tags {tag}: not taken back"
    assert wait_for(lambda: healthy(agent))


def test_install_tag_alone_restarts_on_a_new_binary(agent, collector, tmp_path, install_only):
    """A different binary (the build with one byte appended: same collector, other checksum) is copied
    and the collector restarted on it; the build comes back the same way."""
    builds = controller_builds()
    assert builds, "no cached build on the controller"
    other = tmp_path / "otelcol-contrib"
    other.write_bytes(builds[-1].read_bytes() + b"\0")
    pid = main_pid(agent)
    extra = {
        "otel_collector_install_method": "local",
        "otel_collector_local_path": str(other),
        "otel_collector_cache_dir": str(tmp_path / "cache"),
    }
    try:
        result = collector(extra_vars=extra, limit=AGENT)
        assert result.returncode == 0, result.stdout[-3000:]
        assert agent.check_output(f"sha256sum {BINARY}").split()[0] == sha256(other)
        assert wait_for(lambda: healthy(agent))
        assert main_pid(agent) != pid, "a new binary needs a restart"
        assert agent.check_output(f"readlink /proc/{main_pid(agent)}/exe") == BINARY
    finally:
        back = collector(limit=AGENT)
    assert back.returncode == 0, back.stdout[-3000:]
    assert agent.check_output(f"sha256sum {BINARY}").split()[0] == sha256(builds[-1])
    assert wait_for(lambda: healthy(agent))


def test_check_and_diff_mode(agent, gateway, collector, monkeypatch):
    """Check mode on the converged hosts finds nothing to do; with a new layer it shows the diff of
    config.yaml (validated by the collector) and changes neither the file nor the process."""
    monkeypatch.setenv("ANSIBLE_DIFF_ALWAYS", "1")
    steady = collector(check=True)
    assert steady.returncode == 0, steady.stdout[-3000:]
    assert {name: counts["changed"] for name, counts in recap(steady.stdout).items()} == {AGENT: 0, GATEWAY: 0}
    pid, before = main_pid(agent), agent.check_output(f"sha256sum {CONFIG}")
    layer = {"otel_collector_config_zz_check": {"processors": {"batch": {"timeout": "3s"}}}}
    predicted = collector(extra_vars=layer, limit=AGENT, check=True)
    assert predicted.returncode == 0, predicted.stdout[-3000:]
    assert re.search(r"^\+\s+timeout: 3s$", predicted.stdout, re.M), predicted.stdout[-3000:]
    assert recap(predicted.stdout)[AGENT]["changed"] >= 1
    assert agent.check_output(f"sha256sum {CONFIG}") == before
    assert main_pid(agent) == pid


# --- mutual TLS between agent and gateway, from the site PKI -------------------------------------


def _span_reaches_the_backend(agent, gateway) -> bool:
    """A new span sent to the agent shows up in the gateway's backend file within a minute."""
    trace_id = secrets.token_hex(16)
    _send_span(agent, trace_id)
    return bool(wait_for(lambda: trace_id in gateway.run(f"cat {BACKEND}").stdout, timeout=60))


def test_tls_between_agent_and_gateway(agent, gateway, collector):
    """The default with a gateway in the inventory (otel_collector_tls_enabled): the gateway's OTLP
    receivers require a client certificate of the site CA, the agent presents its own and verifies the
    gateway; a span reaches the backend, and a client without a certificate is refused."""
    key = gateway.file("/etc/otelcol/tls/otelcol.key")
    assert (key.user, key.group, key.mode) == ("root", "otelcol", 0o640)
    cert = gateway.check_output("openssl x509 -noout -text -in /etc/otelcol/tls/otelcol.crt")
    assert "TLS Web Server Authentication" in cert
    assert f"DNS:{GATEWAY}" in cert
    assert "TLS Web Client Authentication" in agent.check_output(
        "openssl x509 -noout -text -in /etc/otelcol/tls/otelcol.crt"
    )
    assert "/etc/otelcol/tls/ca.crt" in gateway.file(CONFIG).content_string
    # Without a client certificate, the gateway refuses (TLS handshake or HTTP refused).
    plain = agent.run(
        f"curl -sS --max-time 10 --cacert /etc/otelcol/tls/ca.crt -o /dev/null -w '%{{http_code}}' "
        f"-X POST -H 'Content-Type: application/json' -d '{{}}' https://{GATEWAY}:4318/v1/traces"
    )
    assert plain.rc != 0 or plain.stdout.strip() != "200", plain.stdout
    with_cert = agent.run(
        "curl -sS --max-time 10 --cacert /etc/otelcol/tls/ca.crt --cert /etc/otelcol/tls/otelcol.crt "
        "--key /etc/otelcol/tls/otelcol.key -o /dev/null -w '%{http_code}' -X POST "
        f"-H 'Content-Type: application/json' -d '{{}}' https://{GATEWAY}:4318/v1/traces"
    )
    assert with_cert.stdout.strip() == "200", with_cert.stdout + with_cert.stderr
    # The agent's own exporter goes over mutual TLS: a span reaches the backend.
    assert _span_reaches_the_backend(agent, gateway)


def test_plaintext_only_when_accepted(agent, gateway, collector):
    """Turning TLS off is refused before any change (a bad-input case above); accepted explicitly, the
    link goes plaintext and the TLS files are removed; the default brings mutual TLS back."""
    try:
        result = collector(extra_vars={"otel_collector_tls_enabled": False, "otel_collector_plaintext_accepted": True})
        assert result.returncode == 0, result.stdout[-3000:]
        assert "client_ca_file" not in gateway.file(CONFIG).content_string
        for h in (agent, gateway):
            assert not h.file("/etc/otelcol/tls").exists
        assert wait_for(lambda: healthy(agent) and healthy(gateway))
        assert _span_reaches_the_backend(agent, gateway)
    finally:
        back = collector()
    assert back.returncode == 0, back.stdout[-3000:]
    assert "PRIVATE KEY" not in back.stdout + back.stderr
    assert "/etc/otelcol/tls/ca.crt" in gateway.file(CONFIG).content_string
    assert wait_for(lambda: healthy(agent) and healthy(gateway))
