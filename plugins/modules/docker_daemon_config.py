#!/usr/bin/python
# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_config
short_description: Write Docker's daemon.json after dockerd itself accepted it
version_added: 0.1.0
description:
  - Renders O(settings) as C(daemon.json) (sorted keys, stable formatting) and replaces O(path) atomically,
    only when the content differs and only after dockerd accepted the candidate file together with the
    flags the service passes (O(dockerd_flags)), so that a conflict such as C(hosts) in the file next to
    C(-H fd://) is caught before the daemon would fail to start.
  - Docker 23.0 and later check the file with C(dockerd --validate). Older daemons (Debian 12 ships 20.10)
    have no such option; there the module runs dockerd in a new user namespace, where it is not root, so dockerd
    loads and checks the configuration (JSON syntax, unknown keys, value types, flag conflicts) and then stops
    at its "needs to be started with root" check, before it creates any file, socket or network.
  - Reports which top-level keys change and whether dockerd must be restarted or a reload (SIGHUP) is enough
    (only changes to keys dockerd reloads, none of them removed).
    The module never signals or restarts the daemon itself.
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the candidate is validated too (from a temporary file) when dockerd is installed.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  settings:
    description: The daemon settings (the whole file; keys as in C(daemon.json)).
    type: dict
    required: true
  path:
    description: The daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  dockerd:
    description: The dockerd executable used to check the candidate.
    type: path
    default: /usr/sbin/dockerd
  dockerd_flags:
    description:
      - The flags the service starts dockerd with (as in C(ExecStart=)), so that options given both as a flag
        and in the file are refused.
    type: list
    elements: str
    default: ["-H", "fd://", "--containerd=/run/containerd/containerd.sock"]
  reloadable_keys:
    description:
      - Top-level keys that dockerd applies on SIGHUP. A change to any other key sets RV(restart_required).
      - The default is Docker's documented list.
    type: list
    elements: str
  userland_proxy_fallback:
    description:
      - When O(settings) turn the userland proxy off (V(userland-proxy=false)) on a host where O(route_localnet)
        is not writable (a read-only C(/proc/sys/net), as in unprivileged containers), write
        V(userland-proxy=true) instead and warn. dockerd sets C(route_localnet) on its bridges without the
        proxy and does not start where it cannot.
    type: bool
    default: false
  route_localnet:
    description: The kernel setting whose writability O(userland_proxy_fallback) checks.
    type: path
    default: /proc/sys/net/ipv4/conf/all/route_localnet
  validate:
    description:
      - Check the candidate with dockerd before it replaces O(path). Only for hosts without dockerd (a
        configuration written before the engine is installed); the module fails when dockerd is missing
        and this is V(true), except in check mode.
    type: bool
    default: true
notes:
  - JSON has no comments, so the file cannot carry an "Ansible managed" line.
  - The file is written mode 0644; C(daemon.json) must not hold secrets (TLS keys are separate files).
seealso:
  - name: dockerd configuration file
    description: Docker's reference for daemon.json.
    link: https://docs.docker.com/reference/cli/dockerd/#daemon-configuration-file
"""

EXAMPLES = r"""
- name: Rotated logs and live restore
  apes.infra.docker_daemon_config:
    settings:
      log-driver: local
      log-opts:
        max-size: 20m
        max-file: "5"
      live-restore: true
  register: daemon

- name: Apply it the cheapest way that works
  ansible.builtin.systemd_service:
    name: docker.service
    state: "{{ 'restarted' if daemon.restart_required else 'reloaded' }}"
  when: daemon.changed
"""

RETURN = r"""
changed_keys:
  description: Top-level keys added, removed or changed, sorted.
  returned: always
  type: list
  elements: str
  sample: ["live-restore", "log-opts"]
restart_required:
  description:
    - Whether dockerd must restart to apply the change. A reload is enough when every changed key is in
      O(reloadable_keys) and none was removed (a reload applies only the keys present in the file).
  returned: always
  type: bool
userland_proxy_forced:
  description: Whether O(userland_proxy_fallback) kept the userland proxy on.
  returned: always
  type: bool
validated_with:
  description:
    - How the candidate was checked, V(dockerd --validate) or V(dockerd configuration loader in a user namespace);
      empty when it was not checked (nothing changed, O(validate=false), or check mode without dockerd).
  returned: always
  type: str
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.apes.infra.plugins.module_utils._docker_daemon import (
    MODE_USERNS,
    MODE_VALIDATE,
    RELOADABLE_KEYS,
    USERLAND_PROXY_WARNING,
    DaemonConfigError,
    changed_keys,
    removed_keys,
    render,
    restart_required,
    supports_validate,
    validation_command,
    validation_result,
    with_userland_proxy_fallback,
)


def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _validate(module, candidate):
    """Check the candidate file with dockerd; fail the module with dockerd's message if it is refused."""
    dockerd = module.params["dockerd"]
    rc, out, err = module.run_command([dockerd, "--help"])
    native = supports_validate(out + err)
    cmd = validation_command(dockerd, candidate, module.params["dockerd_flags"], native)
    rc, out, err = module.run_command(cmd)
    ok, message = validation_result(native, rc, out, err)
    if not ok:
        module.fail_json(msg=f"dockerd refused the new {module.params['path']}: {message}", cmd=cmd)
    return MODE_VALIDATE if native else MODE_USERNS


def main():
    module = AnsibleModule(
        argument_spec={
            "settings": {"type": "dict", "required": True},
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "dockerd": {"type": "path", "default": "/usr/sbin/dockerd"},
            "dockerd_flags": {
                "type": "list",
                "elements": "str",
                "default": ["-H", "fd://", "--containerd=/run/containerd/containerd.sock"],
            },
            "reloadable_keys": {"type": "list", "elements": "str", "no_log": False},
            "userland_proxy_fallback": {"type": "bool", "default": False},
            "route_localnet": {"type": "path", "default": "/proc/sys/net/ipv4/conf/all/route_localnet"},
            "validate": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    reloadable = module.params["reloadable_keys"]
    if reloadable is None:
        reloadable = list(RELOADABLE_KEYS)
    settings, forced = module.params["settings"], False
    if module.params["userland_proxy_fallback"]:
        # os.access() is false on a read-only mount even for root.
        writable = os.access(module.params["route_localnet"], os.W_OK)
        settings, forced = with_userland_proxy_fallback(settings, writable)
        if forced:
            module.warn(USERLAND_PROXY_WARNING)
    try:
        content = render(settings)
    except DaemonConfigError as exc:
        module.fail_json(msg=f"settings: {exc}")

    before = _read(path)
    changed = before != content
    keys = changed_keys(before, settings)
    result = {
        "changed": changed,
        "changed_keys": keys,
        "restart_required": restart_required(keys, reloadable, removed_keys(before, settings)),
        "userland_proxy_forced": forced,
        "validated_with": "",
    }
    if module._diff:
        result["diff"] = {"before": before or "", "after": content, "before_header": path, "after_header": path}
    # Mode only: the file is created by the user the module runs as (root), and an existing file keeps its owner.
    file_args = module.load_file_common_arguments({"path": path, "mode": "0644"})
    if not changed:
        result["changed"] = module.set_fs_attributes_if_different(file_args, False)
        module.exit_json(**result)

    directory = os.path.dirname(path)
    have_dockerd = os.path.isfile(module.params["dockerd"]) and os.access(module.params["dockerd"], os.X_OK)
    if module.params["validate"] and not have_dockerd and not module.check_mode:
        module.fail_json(
            msg=f"{module.params['dockerd']} does not exist: install Docker Engine before writing {path}, "
            "or set validate=false",
            **result,
        )

    if module.check_mode:
        if module.params["validate"] and have_dockerd:
            fd, tmp = tempfile.mkstemp(prefix=".daemon.json.", suffix=".check")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(content)
                result["validated_with"] = _validate(module, tmp)
            finally:
                os.unlink(tmp)
        module.exit_json(**result)

    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        os.chmod(tmp, 0o644)
        if module.params["validate"]:
            result["validated_with"] = _validate(module, tmp)
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    module.set_fs_attributes_if_different(file_args, False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
