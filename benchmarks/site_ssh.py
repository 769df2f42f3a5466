#!/usr/bin/env python
"""Time the idempotent site.yml re-run over SSH instead of `docker exec`, with the per-role split.

Production reaches hosts over SSH, not through the Docker CLI. This script turns the running local
environment (scripts/local-env up) into SSH hosts: it installs Debian's openssh-server in every
container (through `docker exec`), authorizes a throwaway key for root, writes a copy of the local
inventory that reaches each host at its address with the ssh connection (ControlPersist and
pipelining on, as ansible.cfg sets them), and runs site.yml RUNS times. It prints the same lines as
site_converge.py (wall time, changed per host, seconds per role from profile_roles, module runs).
Nothing here asserts anything. The containers keep openssh-server afterwards (recreate them with
`scripts/local-env down && scripts/local-env up` for a clean state).

Usage (inside the tools' environment, with the local environment up):
    benchmarks/site_ssh.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import yaml
from site_converge import INVENTORY, PROJECT, line, playbook


def sh(*argv: str, **kwargs) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    inventory = yaml.safe_load(INVENTORY.read_text())
    hosts = {}

    def walk(group):
        for name, hostvars in (group.get("hosts") or {}).items():
            if hostvars and "ansible_host" in hostvars:
                hosts[name] = hostvars
        for child in (group.get("children") or {}).values():
            walk(child)

    walk(inventory["all"])
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "id_ed25519"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        public = (Path(tmp) / "id_ed25519.pub").read_text()
        for name, hostvars in hosts.items():
            container = hostvars["ansible_host"]
            sh(
                "docker",
                "exec",
                container,
                "bash",
                "-c",
                "command -v sshd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300"
                " install -y -qq openssh-server >/dev/null; systemctl enable --now ssh >/dev/null 2>&1;"
                " install -d -m 0700 /root/.ssh && cat >> /root/.ssh/authorized_keys && sort -u -o"
                " /root/.ssh/authorized_keys /root/.ssh/authorized_keys",
                input=public,
            )
            address = json.loads(sh("docker", "inspect", container))[0]["NetworkSettings"]["Networks"]
            hosts[name] = next(iter(address.values()))["IPAddress"]
            print(f"{name}: sshd on {hosts[name]}", flush=True)
        known = Path(tmp) / "known_hosts"
        known.write_text(sh("ssh-keyscan", "-q", *hosts.values()))
        # The same inventory, reached over SSH: group_vars come along (they live beside hosts.yml).
        ssh_dir = Path(tmp) / "inventory"
        ssh_dir.mkdir()
        (ssh_dir / "group_vars").symlink_to(INVENTORY.parent / "group_vars")
        copy = yaml.safe_load(INVENTORY.read_text())

        def rewrite(group):
            for name in group.get("hosts") or {}:
                if name in hosts and group["hosts"][name] and "ansible_host" in group["hosts"][name]:
                    group["hosts"][name]["ansible_host"] = hosts[name]
            for child in (group.get("children") or {}).values():
                rewrite(child)

        rewrite(copy["all"])
        copy["all"]["vars"].update(
            {
                "ansible_connection": "ssh",
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={known} -o ControlMaster=auto -o ControlPersist=120s"
                ),
                # The secrets stay where the local environment keeps them.
                "local_env_secrets_dir": str(INVENTORY.parent / ".secrets"),
            }
        )
        (ssh_dir / "hosts.yml").write_text(yaml.safe_dump(copy))
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        runs = [playbook("site.yml", inventory=ssh_dir / "hosts.yml") for _run in range(args.runs)]
        line("ssh idempotent", runs)
        print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    os.chdir(PROJECT)
    main()
