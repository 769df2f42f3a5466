"""The apes.infra.pki role in a real ansible-playbook run: two hosts (local connection), each
including the role from two "roles" with its own requests. One module call per include serves the
whole play, every host gets apes_pki with every certificate, and a second run and a check run
change nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = shutil.which("ansible-playbook")
pytestmark = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook is not installed here")

INVENTORY = """all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  hosts:
    h1: {}
    h2: {}
"""

PLAY = """- name: Two roles include the PKI
  hosts: all
  gather_facts: false
  tasks:
    - name: Certificates of the first role
      ansible.builtin.include_role:
        name: apes.infra.pki
      vars:
        pki_certificates_wanted:
          - name: "{{ inventory_hostname }}-server"
            common_name: "{{ inventory_hostname }}.example.net"
            subject_alt_names: ["DNS:{{ inventory_hostname }}.example.net", "IP:127.0.0.1"]
            extended_key_usage: [serverAuth, clientAuth]

    - name: Certificates of the second role
      ansible.builtin.include_role:
        name: apes.infra.pki
      vars:
        pki_certificates_wanted:
          - name: "{{ inventory_hostname }}-client"
            extended_key_usage: [clientAuth]

    - name: Write what each host sees
      ansible.builtin.copy:
        # Names and serials only: 'changed' and 'reason' differ between the first run and the next.
        content: >-
          {{ {'ca_path': ansible_facts.apes_pki.ca_path,
              'same_as_variable': ansible_facts.apes_pki == apes_pki,
              'serials': dict(apes_pki.certificates.keys()
                              | zip(apes_pki.certificates.values() | map(attribute='serial')))}
             | to_nice_json }}
        dest: "{{ inventory_dir }}/seen-{{ inventory_hostname }}.json"
        mode: "0600"
"""

BAD_PLAY = """- name: A request without a name
  hosts: h1
  gather_facts: false
  tasks:
    - name: Include the PKI
      ansible.builtin.include_role:
        name: apes.infra.pki
      vars:
        pki_certificates_wanted:
          - common_name: nameless
"""


def play(tmp_path, playbook="site.yml", *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / ".ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="false",
    )
    proc = subprocess.run(
        [PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), str(tmp_path / playbook), *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    recap = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s*:.*?changed=(\d+)", proc.stdout, re.M)}
    return proc, recap


def test_one_call_serves_the_play(tmp_path):
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    (tmp_path / "site.yml").write_text(PLAY)
    proc, recap = play(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("TASK [apes.infra.pki : Issue or renew the certificates of every host in the play]") == 2
    assert recap["h1"] > 0

    names = {"h1-server", "h1-client", "h2-server", "h2-client"}
    pki = tmp_path / ".secrets" / "pki"
    for host in ("h1", "h2"):
        seen = json.loads((tmp_path / f"seen-{host}.json").read_text())
        assert seen["ca_path"] == str(pki / "ca.crt")
        assert seen["same_as_variable"] is True, "a fact, injected as the variable apes_pki too"
        assert set(seen["serials"]) == names, "requests add up over the run, for every host"
        assert all(seen["serials"].values())
    for name in names:
        assert (pki / "certs" / f"{name}.crt").exists()
        assert (pki / "private" / f"{name}.key").exists()

    proc, recap = play(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap == {"h1": 0, "h2": 0}, proc.stdout

    proc, recap = play(tmp_path, "site.yml", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap == {"h1": 0, "h2": 0}, proc.stdout


def test_bad_requests_fail_before_any_change(tmp_path):
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    (tmp_path / "bad.yml").write_text(BAD_PLAY)
    proc, _recap = play(tmp_path, "bad.yml")
    assert proc.returncode != 0
    assert "missing required arguments: name found in pki_certificates_wanted" in proc.stdout
    assert not (tmp_path / ".secrets").exists()
