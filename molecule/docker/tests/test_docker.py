"""Behaviour of the docker role in systemd containers on Debian 12 (docker.io 20.10) and 13 (26.1).

Tests with a `host` argument run on each instance against the converged state. The tests at the
end run the role again with other input on all instances at once (bad input, a reload and a
restart, TCP with TLS, the prune service, the upstream source, a version pin) and leave the
instances as converge left them.
"""

from __future__ import annotations

import json
import re
import time

from docker_helpers import IMAGE, ensure_image, recap, write_file

DAEMON_JSON = "/etc/docker/daemon.json"
# What each instance must run: Debian's own engine and compose tool.
ENGINE = {"apes-docker-debian12": "20.10.", "apes-docker-debian13": "26.1."}
COMPOSE = {
    "apes-docker-debian12": ("docker-compose version --short", "1.29."),
    "apes-docker-debian13": ("docker compose version --short", "2.26."),
}
VALIDATED_WITH = {
    "apes-docker-debian12": "dockerd configuration loader in a user namespace",
    "apes-docker-debian13": "dockerd --validate",
}
DOCKERD = "/usr/sbin/dockerd"
PRUNE = "apes-docker-prune"
# The tests that change the daemon's configuration run only the role's configuration and service
# tasks (the input checks always run): the packages are covered by converge and idempotence.
CONFIG = ["docker_config", "docker_service"]


def name_of(host) -> str:
    return host.backend.get_hostname()


def main_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value docker.service")


def allow_restart(instances) -> None:
    """These tests restart dockerd more often than any real change does: reset systemd's start rate limit
    (docker.service: StartLimitBurst=3 in 60 s, manual restarts included) before each restarting run."""
    for h in instances.values():
        h.check_output("systemctl reset-failed docker.service docker.socket")


def expected_daemon_json(scenario_vars) -> dict:
    """The role's defaults with the scenario's docker_daemon_config merged over them."""
    return {
        "log-driver": "local",
        "log-opts": scenario_vars["docker_daemon_config"]["log-opts"],
        "live-restore": True,
        "no-new-privileges": True,
        "userland-proxy": False,
        "default-address-pools": scenario_vars["docker_daemon_config"]["default-address-pools"],
    }


# --- the converged state, per instance ---------------------------------------------------------


def test_the_distro_engine_answers_with_the_configured_settings(host):
    name = name_of(host)
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["ServerVersion"].startswith(ENGINE[name])
    assert info["LoggingDriver"] == "local"
    assert info["LiveRestoreEnabled"] is True
    # /var/lib/docker is a volume in this scenario (molecule.yml), so overlay2 works inside.
    assert info["Driver"] == "overlay2"
    assert host.package("docker.io").is_installed
    assert not host.package("docker-ce").is_installed
    assert host.service("docker").is_running
    assert host.service("docker").is_enabled


def test_daemon_json_is_the_merged_configuration(host, scenario_vars):
    daemon_json = host.file(DAEMON_JSON)
    assert json.loads(daemon_json.content_string) == expected_daemon_json(scenario_vars)
    assert daemon_json.mode == 0o644
    assert daemon_json.user == "root"
    # No TCP listeners: no drop-in, no TLS material.
    assert not host.file("/etc/systemd/system/docker.service.d/90-apes-infra.conf").exists
    assert not host.file("/etc/docker/tls").exists


def test_compose_tool_of_the_source(host):
    command, version = COMPOSE[name_of(host)]
    assert host.check_output(command).lstrip("v").startswith(version)


def test_container_runs_and_its_logs_rotate(host, image):
    host.run("docker rm -f apes-logs")
    lines = 6000  # about 400 kB: more than max-file (3) x max-size (100k)
    host.check_output(
        f"docker run -d --name apes-logs {image} sh -c "
        f"'i=0; while [ $i -lt {lines} ]; do echo \"line $i padding padding padding padding\"; i=$((i+1)); done'"
    )
    assert host.check_output("docker wait apes-logs") == "0"
    log_config = json.loads(host.check_output("docker inspect -f '{{json .HostConfig.LogConfig}}' apes-logs"))
    assert log_config == {"Type": "local", "Config": {"max-file": "3", "max-size": "100k"}}
    log_dir = host.check_output("docker inspect -f '{{.ID}}' apes-logs")
    files = host.check_output(f"ls /var/lib/docker/containers/{log_dir}/local-logs").split()
    assert sorted(files) == ["container.log", "container.log.1.gz", "container.log.2.gz"]
    size = int(host.check_output(f"stat -c %s /var/lib/docker/containers/{log_dir}/local-logs/container.log"))
    assert size <= 100 * 1024 + 200
    first = host.check_output("docker logs apes-logs 2>&1 | head -n 1")
    last = host.check_output("docker logs apes-logs 2>&1 | tail -n 1")
    assert last.startswith(f"line {lines - 1} ")
    assert not first.startswith("line 0 "), "the oldest lines must have been rotated away"


def test_processes_in_containers_cannot_gain_privileges(host, image):
    status = host.check_output(f"docker run --rm {image} grep NoNewPrivs /proc/self/status")
    assert status.split() == ["NoNewPrivs:", "1"]


def test_networks_come_from_the_configured_pools(host):
    bridge = host.check_output("docker network inspect bridge -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}'")
    assert re.fullmatch(r"10\.213\.\d+\.0/24", bridge), bridge
    host.run("docker network rm apes-test-net")
    host.check_output("docker network create apes-test-net")
    try:
        subnet = host.check_output("docker network inspect apes-test-net -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}'")
        assert re.fullmatch(r"10\.213\.\d+\.0/24", subnet), subnet
        assert subnet != bridge
    finally:
        host.run("docker network rm apes-test-net")


def test_published_port_answers_without_userland_proxy(host, image):
    host.run("docker rm -f apes-web")
    host.check_output(f"docker run -d --name apes-web -p 127.0.0.1:18080:8080 {image} httpd -f -p 8080 -h /www")
    try:
        fetch = "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:18080/').read())\""
        for _attempt in range(20):
            answer = host.run(fetch)
            if answer.rc == 0:
                break
            time.sleep(0.5)
        assert answer.rc == 0, answer.stderr
        assert "apes" in answer.stdout
        # userland-proxy: false: iptables forwards the port, no docker-proxy process does.
        assert host.run("pgrep -x docker-proxy").rc == 1
    finally:
        host.run("docker rm -f apes-web")


def test_forwarding_stays_on_next_to_os_tuning(host, image):
    """os_tuning's docker_host profile keeps ip_forward=1; containers reach beyond the host through it."""
    dropin = host.file("/etc/sysctl.d/90-apes-infra.conf").content_string
    assert re.search(r"^net\.ipv4\.ip_forward = 1$", dropin, re.M)
    assert host.file("/proc/sys/net/ipv4/ip_forward").content_string.strip() == "1"
    # The instance's default gateway is the test machine itself: forwarded and masqueraded by the instance.
    gateway = host.check_output("ip -4 route show default").split()[2]
    ping = host.run(f"docker run --rm {image} ping -c 1 -W 5 {gateway}")
    assert ping.rc == 0, ping.stdout + ping.stderr
    assert "1 packets received" in ping.stdout


def test_docker_group_members_use_docker_and_others_cannot(host):
    assert "docker" in host.user("apes-dev").groups
    member = host.run("runuser -u apes-dev -- docker ps")
    assert member.rc == 0, member.stderr
    outsider = host.run("runuser -u nobody -- docker ps")
    assert outsider.rc != 0
    assert "permission denied" in outsider.stderr
    socket = host.file("/run/docker.sock")
    assert socket.is_socket
    assert (socket.user, socket.group, socket.mode) == ("root", "docker", 0o660)


def test_no_tcp_listener(host):
    listeners = host.check_output("ss -Hltnp")
    assert "dockerd" not in listeners, listeners


def test_prune_timer_is_scheduled_and_sandboxed(host):
    timer = host.service(f"{PRUNE}.timer")
    assert timer.is_enabled
    assert timer.is_running
    assert host.check_output(f"systemctl show -p NextElapseUSecRealtime --value {PRUNE}.timer")
    unit = host.file(f"/etc/systemd/system/{PRUNE}.service").content_string
    assert "docker image prune --all --force --filter until=168h" in unit
    assert "docker builder prune --all --force --filter until=168h" in unit
    verify = host.run(f"systemd-analyze verify /etc/systemd/system/{PRUNE}.service /etc/systemd/system/{PRUNE}.timer")
    assert verify.rc == 0, verify.stderr
    security = host.check_output(f"systemd-analyze security --no-pager {PRUNE}.service")
    exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security).group(1))
    assert exposure <= 1.0, security
    # It runs: a oneshot that talks to the daemon through the socket from its sandbox.
    run = host.run(f"systemctl start {PRUNE}.service")
    assert run.rc == 0, host.run(f"journalctl -u {PRUNE}.service -n 20 --no-pager").stdout
    assert host.check_output(f"systemctl show -p Result --value {PRUNE}.service") == "success"
    assert "Total reclaimed space" in host.check_output(f"journalctl -u {PRUNE}.service --no-pager")


def test_dockerd_checks_a_candidate_before_it_is_written(host, ansible_module, scenario_vars):
    """The module with the real daemon: Docker 26 uses --validate, 20.10 its loader in a user namespace."""
    name = name_of(host)
    live = host.file(DAEMON_JSON).content_string
    current = expected_daemon_json(scenario_vars)
    cases = [
        ({**current, "bogus-key": 1}, "don't match any configuration option: bogus-key"),
        ({**current, "hosts": ["tcp://127.0.0.1:2375"]}, "specified both as a flag and in the configuration file"),
        ({**current, "live-restore": "yes"}, "cannot unmarshal string"),
    ]
    for settings, message in cases:
        args = {"settings": settings, "dockerd": DOCKERD}
        result = ansible_module(host, "apes.infra.docker_daemon_config", args, check=True)
        assert result.get("failed"), result
        assert message in result["msg"]
    accepted = ansible_module(
        host,
        "apes.infra.docker_daemon_config",
        {"settings": {**current, "debug": True}, "dockerd": DOCKERD},
        check=True,
    )
    assert accepted["changed"]
    assert accepted["validated_with"] == VALIDATED_WITH[name]
    assert accepted["changed_keys"] == ["debug"]
    assert not accepted["restart_required"]
    assert host.file(DAEMON_JSON).content_string == live


# --- the role again, with other input, on all instances at once ------------------------------


def test_bad_input_fails_before_any_change(playbook, instances):
    before = {name: h.file(DAEMON_JSON).content_string for name, h in instances.items()}
    spec = playbook(
        {"docker_source": "podman", "docker_daemon_config": ["log-driver=local"], "docker_prune_enabled": "maybe"}
    )
    semantic = playbook(
        {
            "docker_tcp_listen": ["0.0.0.0:2376", "nonsense"],
            "docker_daemon_config": {"hosts": ["tcp://0.0.0.0:2375"], "log-opts": {"max-sizes": "1m"}},
            "docker_users": ["apes-dev", "nosuchuser"],
            "docker_source": "upstream",
            "docker_upstream_gpg_fingerprint": "0EBFCD88",
            "docker_version": "1.0 bad",
            "docker_prune_until": "weekly",
            "docker_prune_enabled": True,
            "docker_prune_on_calendar": "every full moon",
        }
    )
    spec_out = spec.stdout + spec.stderr
    assert spec.returncode != 0
    assert "Validating arguments against arg spec" in spec_out
    for variable in ("docker_source", "docker_daemon_config", "docker_prune_enabled"):
        assert variable in spec_out, spec_out[-3000:]
    out = semantic.stdout + semantic.stderr
    assert semantic.returncode != 0
    for message in (
        "docker_tcp_listen (0.0.0.0:2376, nonsense) would open the Docker API",
        "Set docker_tls_ca_cert, docker_tls_cert, docker_tls_key",
        "docker_tcp_listen: nonsense is not ADDRESS:PORT",
        "docker_daemon_config: do not set 'hosts'",
        "log-opts max-sizes are not options of the local log driver",
        "docker_upstream_gpg_fingerprint '0EBFCD88' is not a full fingerprint",
        "docker_version '1.0 bad'",
        "docker_prune_until 'weekly'",
        "docker_prune_on_calendar 'every full moon' is not a systemd calendar expression",
        "docker_users: nosuchuser do not exist",
    ):
        assert message in re.sub(r"\s+", " ", out), message
    for result in (spec, semantic):
        counters = recap(result)
        assert set(counters) == set(instances)
        assert all(c["changed"] == 0 and c["failed"] == 1 for c in counters.values()), counters
    assert {name: h.file(DAEMON_JSON).content_string for name, h in instances.items()} == before


def test_reload_when_enough_restart_when_required(playbook, instances, scenario_vars):
    """A label change is applied with SIGHUP; taking it out needs a restart, which containers survive
    (live-restore). That other keys (log options, ...) restart is unit-tested with the module."""
    for h in instances.values():
        ensure_image(h)
        h.run("docker rm -f apes-live")
        h.check_output(f"docker run -d --name apes-live {IMAGE} sleep 3600")
    pids = {name: main_pid(h) for name, h in instances.items()}
    started = {
        name: h.check_output("docker inspect -f '{{.State.StartedAt}}' apes-live") for name, h in instances.items()
    }

    labelled = {**scenario_vars["docker_daemon_config"], "labels": ["org.apes-infra.test=reload"]}
    result = playbook({"docker_daemon_config": labelled}, tags=CONFIG)
    assert result.returncode == 0, result.stdout[-3000:]
    for name, h in instances.items():
        assert main_pid(h) == pids[name], "a label change must reload, not restart"
        labels = json.loads(h.check_output("docker info --format '{{json .Labels}}'"))
        assert "org.apes-infra.test=reload" in labels

    # Back to the converged settings: the label is taken out of daemon.json. A reload would keep it
    # (dockerd reloads only keys present in the file), so this restarts, and the container survives.
    allow_restart(instances)
    result = playbook(tags=CONFIG)
    assert result.returncode == 0, result.stdout[-3000:]
    for name, h in instances.items():
        assert main_pid(h) != pids[name], "a removed key needs a restart"
        assert json.loads(h.check_output("docker info --format '{{json .Labels}}'")) in (None, [])
        assert h.check_output("docker inspect -f '{{.State.Running}} {{.State.StartedAt}}' apes-live") == (
            f"true {started[name]}"
        ), "live-restore keeps containers running while dockerd restarts"
    for h in instances.values():
        h.run("docker rm -f apes-live")


def test_read_only_proc_sys_net_keeps_the_userland_proxy(playbook, instances, scenario_vars):
    """Where /proc/sys/net is read-only (an unprivileged container), dockerd cannot run without the userland
    proxy: the role keeps it on and says so, instead of writing a configuration that stops the daemon."""
    try:
        for h in instances.values():
            ensure_image(h)
            h.check_output("mount -o remount,ro,bind /proc/sys/net")
        allow_restart(instances)
        result = playbook(tags=CONFIG)
        assert result.returncode == 0, result.stdout[-3000:]
        # A warning in the play's output, not a silent change.
        assert "userland-proxy: false needs a writable /proc/sys/net" in re.sub(
            r"\s+", " ", result.stdout + result.stderr
        )
        for h in instances.values():
            assert json.loads(h.file(DAEMON_JSON).content_string)["userland-proxy"] is True
            # dockerd runs and runs containers. (Networked ones need a writable /proc/sys/net on Docker 26
            # anyway: it disables IPv6 on their interfaces. See the README.)
            assert h.service("docker").is_running
            assert h.run(f"docker run --rm --network none {IMAGE} true").rc == 0
    finally:
        for h in instances.values():
            h.run("mount -o remount,rw,bind /proc/sys/net")
        allow_restart(instances)
        back = playbook(tags=CONFIG)
    assert back.returncode == 0, back.stdout[-3000:]
    assert "userland-proxy: false needs" not in back.stdout + back.stderr
    for h in instances.values():
        assert json.loads(h.file(DAEMON_JSON).content_string) == expected_daemon_json(scenario_vars)


def test_tcp_listener_with_tls_and_prune(playbook, instances, tls_material):
    tls = {
        "docker_tcp_listen": ["127.0.0.1:2376"],
        "docker_tls_ca_cert": tls_material["ca"],
        "docker_tls_cert": tls_material["server"],
        "docker_tls_key": tls_material["server-key"],
        "docker_prune_until": "1s",
    }
    for h in instances.values():
        ensure_image(h)
        # An unused image (different content, so a different ID) and one that a stopped container uses.
        h.run("docker rmi -f apes-test/unused:1; docker rm -f apes-stopped")
        ensure_image(h, "apes-test/unused:1", marker="unused")
        h.check_output(f"docker create --name apes-stopped {IMAGE} true")
        h.check_output("install -d -m 0700 /root/apes-client")
        for label, content in (("ca", "ca"), ("cert", "client"), ("key", "client-key")):
            write_file(h, f"/root/apes-client/{label}.pem", tls_material[content])
    try:
        allow_restart(instances)
        result = playbook(tls, tags=[*CONFIG, "docker_prune"])
        assert result.returncode == 0, result.stdout[-3000:]
        assert "PRIVATE KEY" not in result.stdout + result.stderr, "the key must never be logged"
        for h in instances.values():
            assert "dockerd" in h.check_output("ss -Hltnp 'sport = :2376'")
            assert h.file("/etc/docker/tls/key.pem").mode == 0o600
            assert h.file("/etc/docker/tls").mode == 0o700
            dropin = h.file("/etc/systemd/system/docker.service.d/90-apes-infra.conf").content_string
            assert "ExecStart=\n" in dropin
            assert "-H" not in dropin.split("ExecStart=\n", 1)[1]
            client = "docker --tlsverify --tlscacert /root/apes-client/ca.pem -H tcp://127.0.0.1:2376"
            with_cert = h.run(
                f"{client} --tlscert /root/apes-client/cert.pem --tlskey /root/apes-client/key.pem "
                "version --format '{{.Server.Version}}'"
            )
            assert with_cert.rc == 0, with_cert.stderr
            assert with_cert.stdout.strip().startswith(ENGINE[h.backend.get_hostname()])
            without_cert = h.run(f"{client} version --format '{{{{.Server.Version}}}}'")
            assert without_cert.rc != 0
            assert "certificate" in without_cert.stderr.lower(), without_cert.stderr
            plain = h.run("docker -H tcp://127.0.0.1:2376 version --format '{{.Server.Version}}'")
            assert plain.rc != 0
            # The local socket still works (fd:// is listed in daemon.json's hosts).
            assert h.run("docker version --format '{{.Server.Version}}'").rc == 0

            # Prune with until=1s: the unused image goes, the image a stopped container uses stays.
            assert h.run(f"systemctl start {PRUNE}.service").rc == 0
            assert h.run("docker image inspect apes-test/unused:1").rc != 0
            assert h.run(f"docker image inspect {IMAGE}").rc == 0
    finally:
        allow_restart(instances)
        restore = playbook(tags=[*CONFIG, "docker_prune"])
    assert restore.returncode == 0, restore.stdout[-3000:]
    for h in instances.values():
        assert "dockerd" not in h.check_output("ss -Hltnp")
        assert not h.file("/etc/systemd/system/docker.service.d/90-apes-infra.conf").exists
        assert not h.file("/etc/docker/tls").exists
        assert "hosts" not in json.loads(h.file(DAEMON_JSON).content_string)
        assert h.run("docker version").rc == 0
        h.run("docker rm -f apes-stopped; rm -rf /root/apes-client")


UPSTREAM_FILES = ("/etc/apt/keyrings/docker.asc", "/etc/apt/sources.list.d/docker.sources")
RELEASE = {"apes-docker-debian12": "bookworm", "apes-docker-debian13": "trixie"}


def upstream_vars(key: tuple[str, str]) -> dict:
    armored, fingerprint = key
    return {
        "docker_source": "upstream",
        "docker_upstream_gpg_key": armored,
        "docker_upstream_gpg_fingerprint": fingerprint,
    }


def test_upstream_source_in_check_mode(playbook, instances, throwaway_keys):
    """The whole upstream path in check mode, with a key supplied as a variable (a throwaway key)."""
    result = playbook(upstream_vars(throwaway_keys["trusted"]), check=True, diff=True)
    assert result.returncode == 0, result.stdout[-3000:]
    out = result.stdout
    for name in instances:
        assert f"Suites: {RELEASE[name]}" in out
    assert "URIs: https://download.docker.com/linux/debian" in out
    assert "Signed-By: /etc/apt/keyrings/docker.asc" in out
    assert "Architectures: amd64" in out
    # The install is skipped with a note (the callback doubles the apostrophe in its YAML output).
    assert "repository is not configured yet, so apt cannot tell what it would install" in re.sub(r"\s+", " ", out)
    for h in instances.values():
        for path in UPSTREAM_FILES:
            assert not h.file(path).exists, f"check mode wrote {path}"
        assert h.package("docker.io").is_installed
        assert h.service("docker").is_running


def test_upstream_repository(playbook, instances, throwaway_keys, wait_for):
    """Key placement and the deb822 source for real (tag docker_repository: no package is installed, as
    download.docker.com is unreachable here), stale entries of other tools removed, the key download
    (served on the instance's loopback) checked against the fingerprint, and switching back to distro."""
    trusted, fingerprint = throwaway_keys["trusted"]
    other, other_fingerprint = throwaway_keys["other"]
    with_key = upstream_vars(throwaway_keys["trusted"])
    result = playbook(with_key, tags=["docker_repository"])
    assert result.returncode == 0, result.stdout[-3000:]
    for name, h in instances.items():
        key = h.file(UPSTREAM_FILES[0])
        assert key.content_string == trusted
        assert (key.user, key.mode) == ("root", 0o644)
        source = h.file(UPSTREAM_FILES[1]).content_string
        assert "# Ansible managed" in source
        assert f"Suites: {RELEASE[name]}\n" in source
        assert f"Signed-By: /etc/apt/keyrings/docker.asc {fingerprint}\n" in source
        uris = h.check_output("apt-get update --print-uris")
        assert f"https://download.docker.com/linux/debian/dists/{RELEASE[name]}/stable/binary-amd64/Packages" in uris

        # What other guides and roles leave behind: a second entry with another Signed-By breaks apt.
        h.check_output(
            "echo 'deb [signed-by=/usr/share/keyrings/docker-archive-keyring.gpg] "
            f"https://download.docker.com/linux/debian {RELEASE[name]} stable' > /etc/apt/sources.list.d/docker.list"
            " && touch /etc/apt/trusted.gpg.d/docker.gpg"
        )
        broken = h.run("apt-get update --print-uris")
        assert broken.rc != 0
        assert "Conflicting values set for option Signed-By" in broken.stderr
    result = playbook(with_key, tags=["docker_repository"])
    assert result.returncode == 0, result.stdout[-3000:]
    # Only the removal changed something: the key and the source were already right.
    assert all(c["changed"] == 1 for c in recap(result).values()), result.stdout[-3000:]
    for h in instances.values():
        assert not h.file("/etc/apt/sources.list.d/docker.list").exists
        assert not h.file("/etc/apt/trusted.gpg.d/docker.gpg").exists
        assert h.run("apt-get update --print-uris").rc == 0

    # The download path: a key server on each instance's loopback stands in for download.docker.com.
    for h in instances.values():
        h.run("systemctl stop apes-test-keyserver; rm -rf /srv/apes-keyserver; mkdir -p /srv/apes-keyserver")
        for file_name, content in (("gpg", trusted), ("other", other)):
            write_file(h, f"/srv/apes-keyserver/{file_name}", content, mode="0644")
        h.check_output(
            "systemd-run --unit apes-test-keyserver --property=Type=exec "
            "python3 -m http.server 18765 --bind 127.0.0.1 --directory /srv/apes-keyserver"
        )
        h.check_output(f"rm -f {UPSTREAM_FILES[0]}")
    download = {
        "docker_source": "upstream",
        "docker_upstream_gpg_key_url": "http://127.0.0.1:18765/gpg",
        "docker_upstream_gpg_fingerprint": fingerprint,
    }
    try:
        probe = "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:18765/')\""
        for h in instances.values():
            wait_for(lambda h=h: h.run(probe).rc == 0, timeout=10, step=0.5, what="the test key server")
        # Another key at the URL: refused, nothing installed.
        wrong = playbook(
            {**download, "docker_upstream_gpg_key_url": "http://127.0.0.1:18765/other"}, tags=["docker_repository"]
        )
        assert wrong.returncode != 0
        out = re.sub(r"\s+", " ", wrong.stdout + wrong.stderr)
        assert f"has the fingerprint {other_fingerprint}" in out
        assert f"docker_upstream_gpg_fingerprint is {fingerprint}: the key is not trusted" in out
        for h in instances.values():
            assert not h.file(UPSTREAM_FILES[0]).exists

        first = playbook(download, tags=["docker_repository"])
        assert first.returncode == 0, first.stdout[-3000:]
        second = playbook(download, tags=["docker_repository"])
        assert second.returncode == 0, second.stdout[-3000:]
        assert all(c["changed"] == 0 for c in recap(second).values())
        for h in instances.values():
            assert h.file(UPSTREAM_FILES[0]).content_string == trusted
            invocation = h.check_output("systemctl show -p InvocationID --value apes-test-keyserver")
            log = h.check_output(f"journalctl _SYSTEMD_INVOCATION_ID={invocation} --no-pager")
            assert log.count("GET /gpg") == 1, "an installed key with the right fingerprint is not downloaded again"
    finally:
        for h in instances.values():
            h.run("systemctl stop apes-test-keyserver; rm -rf /srv/apes-keyserver")
        back = playbook(tags=["docker_repository"])
    assert back.returncode == 0, back.stdout[-3000:]
    for h in instances.values():
        for path in UPSTREAM_FILES:
            assert not h.file(path).exists, f"{path} left behind after switching back to distro"
        assert "download.docker.com" not in h.check_output("apt-get update --print-uris")


# An empty Packages file, as a repository index lists it.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
REPO_PORT = 18766
# apt-get update of the upstream source alone, into lists of its own (the instance's Debian lists
# stay as they are), straight to the loopback (the image's apt proxy is the host's).
UPDATE_UPSTREAM_ONLY = (
    "rm -rf /tmp/apes-lists && mkdir -p /tmp/apes-lists/partial && chown _apt /tmp/apes-lists/partial && "
    "apt-get update -o Dir::Etc::SourceList=/etc/apt/sources.list.d/docker.sources "
    "-o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=/tmp/apes-lists "
    "-o Acquire::Languages=none -o Acquire::http::Proxy::127.0.0.1=DIRECT"
)


def test_apt_trusts_only_the_pinned_key_of_the_key_file(playbook, instances, throwaway_keys, clearsign, wait_for):
    """community.crypto.gpg_fingerprint reads the first key of a file only, so a key file with a
    second key appended after the pinned one is installed; apt still accepts only signatures by the
    pinned key, because Signed-By names its fingerprint. A repository on each instance's loopback is
    signed by the appended key (refused), then by the pinned key's subkey, as Docker signs (accepted)."""
    trusted, fingerprint = throwaway_keys["trusted"]
    other, _other_fingerprint = throwaway_keys["other"]
    appended = {
        "docker_source": "upstream",
        "docker_upstream_url": f"http://127.0.0.1:{REPO_PORT}/repo",
        "docker_upstream_gpg_key": trusted + other,
        "docker_upstream_gpg_fingerprint": fingerprint,
    }
    try:
        result = playbook(appended, tags=["docker_repository"])
        assert result.returncode == 0, result.stdout[-3000:]
        releases = {}
        for name, h in instances.items():
            assert h.file(UPSTREAM_FILES[0]).content_string == trusted + other
            suite = RELEASE[name]
            releases[name] = (
                f"Origin: apes test\nSuite: {suite}\nCodename: {suite}\nComponents: stable\nArchitectures: amd64\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S UTC', time.gmtime())}\n"
                f"SHA256:\n {EMPTY_SHA256} 0 stable/binary-amd64/Packages\n"
            )
            h.run("systemctl stop apes-test-repo; rm -rf /srv/apes-repo")
            h.check_output(
                f"mkdir -p /srv/apes-repo/repo/dists/{suite}/stable/binary-amd64"
                f" && : > /srv/apes-repo/repo/dists/{suite}/stable/binary-amd64/Packages"
            )
            h.check_output(
                "systemd-run --unit apes-test-repo --property=Type=exec "
                f"python3 -m http.server {REPO_PORT} --bind 127.0.0.1 --directory /srv/apes-repo"
            )
        probe = f"python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{REPO_PORT}/')\""
        for h in instances.values():
            wait_for(lambda h=h: h.run(probe).rc == 0, timeout=10, step=0.5, what="the test repository")
        for signer, accepted in (("other", False), ("trusted", True)):
            for name, h in instances.items():
                in_release = f"/srv/apes-repo/repo/dists/{RELEASE[name]}/InRelease"
                write_file(h, in_release, clearsign(signer, releases[name]), mode="0644")
                update = h.run(UPDATE_UPSTREAM_ONLY)
                out = update.stdout + update.stderr
                if accepted:
                    assert update.rc == 0, f"{name}, signed by the pinned key's subkey: {out}"
                else:
                    assert update.rc != 0, f"{name}: apt accepted a signature by the appended key: {out}"
                    assert "is not signed" in out, out
    finally:
        for h in instances.values():
            h.run("systemctl stop apes-test-repo; rm -rf /srv/apes-repo /tmp/apes-lists")
        back = playbook(tags=["docker_repository"])
    assert back.returncode == 0, back.stdout[-3000:]


def test_version_pin(playbook, instances):
    """docker_version installs and holds the engine; a version apt does not know fails before it is pinned."""
    versions = {name: h.package("docker.io").version.split("+")[0] for name, h in instances.items()}
    pin = {"docker_version": "{{ " + json.dumps(versions) + "[inventory_hostname] }}"}
    try:
        result = playbook(pin, tags=["docker_repository", "docker_install"])
        assert result.returncode == 0, result.stdout[-3000:]
        for name, h in instances.items():
            prefs = h.file("/etc/apt/preferences.d/docker").content_string
            assert f"Pin: version {versions[name]}*\n" in prefs
            assert "Pin-Priority: 990\n" in prefs
            policy = h.check_output("apt-cache policy docker.io")
            assert re.search(r"\*\*\* \S+ 990", policy), policy
            assert h.package("docker.io").version.startswith(versions[name])
        unknown = playbook({"docker_version": "99.0"}, tags=["docker_repository", "docker_install"])
        assert unknown.returncode != 0
        assert "no available installation candidate for docker.io=99.0*" in unknown.stdout + unknown.stderr
        for name, h in instances.items():
            assert f"Pin: version {versions[name]}*" in h.file("/etc/apt/preferences.d/docker").content_string
    finally:
        back = playbook(tags=["docker_repository", "docker_install"])
    assert back.returncode == 0, back.stdout[-3000:]
    for h in instances.values():
        assert not h.file("/etc/apt/preferences.d/docker").exists


# --- one tag alone, after a change: the running daemon, timer or group picks it up ----------------


def _labels(h) -> list:
    return json.loads(h.check_output("docker info --format '{{json .Labels}}'")) or []


def test_config_tag_alone_reloads_the_daemon(playbook, instances, scenario_vars):
    """--tags docker_config without docker_service (whose flush applies the handlers mid-play): the
    reload still happens, at the end of the play, and only a reload."""
    pids = {name: main_pid(h) for name, h in instances.items()}
    labelled = {**scenario_vars["docker_daemon_config"], "labels": ["org.apes-infra.test=config-tag"]}
    try:
        result = playbook({"docker_daemon_config": labelled}, tags=["docker_config"])
        assert result.returncode == 0, result.stdout[-3000:]
        for name, h in instances.items():
            assert "org.apes-infra.test=config-tag" in _labels(h), name
            assert main_pid(h) == pids[name], "a label change must reload, not restart"
    finally:
        allow_restart(instances)
        back = playbook(tags=["docker_config"])
    assert back.returncode == 0, back.stdout[-3000:]
    for name, h in instances.items():
        assert _labels(h) == [], name


def test_prune_tag_alone_reschedules_the_timer(playbook, instances):
    def calendar(h) -> str:
        return h.check_output(f"systemctl show -p TimersCalendar --value {PRUNE}.timer")

    try:
        result = playbook({"docker_prune_on_calendar": "*-*-* 03:17:00"}, tags=["docker_prune"])
        assert result.returncode == 0, result.stdout[-3000:]
        for name, h in instances.items():
            assert "03:17:00" in calendar(h), name
            assert h.service(f"{PRUNE}.timer").is_running
    finally:
        back = playbook(tags=["docker_prune"])
    assert back.returncode == 0, back.stdout[-3000:]
    for name, h in instances.items():
        assert "03:17:00" not in calendar(h), name
        assert h.service(f"{PRUNE}.timer").is_running


def test_users_tag_alone_adds_a_member_who_can_use_docker(playbook, instances, scenario_vars):
    for h in instances.values():
        h.check_output("id apes-dev2 >/dev/null 2>&1 || useradd --create-home apes-dev2")
    try:
        result = playbook({"docker_users": [*scenario_vars["docker_users"], "apes-dev2"]}, tags=["docker_users"])
        assert result.returncode == 0, result.stdout[-3000:]
        for name, h in instances.items():
            assert "docker" in h.user("apes-dev2").groups, name
            member = h.run("runuser -u apes-dev2 -- docker ps --quiet")
            assert member.rc == 0, member.stderr
    finally:
        for h in instances.values():
            h.run("userdel --remove apes-dev2")


def test_service_tag_alone_starts_a_stopped_daemon(playbook, instances):
    for h in instances.values():
        h.check_output("systemctl stop docker.service docker.socket")
    allow_restart(instances)
    result = playbook(tags=["docker_service"])
    assert result.returncode == 0, result.stdout[-3000:]
    for name, h in instances.items():
        assert h.service("docker").is_running, name
        assert h.run("docker version --format '{{.Server.Version}}'").rc == 0


def test_check_mode_on_the_converged_hosts_changes_nothing(playbook, instances):
    result = playbook(check=True, diff=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert {name: c["changed"] for name, c in recap(result).items()} == dict.fromkeys(instances, 0)
