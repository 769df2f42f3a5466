#!/usr/bin/python
# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sysctl_profile
short_description: Persist and apply a set of kernel parameters in one sysctl.d drop-in
version_added: 0.1.0
description:
  - Writes all O(parameters) to one drop-in file (for example C(/etc/sysctl.d/90-apes-infra.conf)),
    atomically and only when its content differs, and applies each value to the running kernel.
  - Unlike M(ansible.posix.sysctl), which handles one key per task and fails on a read-only key,
    this module reports per key whether the value is V(live) (the kernel runs it now),
    V(persisted) (the key is read-only here, for example a non-namespaced key inside a container,
    so only the file carries it and it applies at the next boot of a host that can set it), or
    V(unknown) (this kernel has no such key).
  - Unknown keys fail the task unless O(allow_missing=true), so a typo does not pass silently. Every key
    is looked up before anything is written; when one is unknown, neither the running kernel nor the
    file is changed.
  - A value the kernel refuses fails the task naming the key, after the values already written by this
    run were put back; the file is then not written either.
  - The module owns the whole file. Keys removed from O(parameters) disappear from the file;
    their live values are left as they are (the module cannot know what they were before).
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the drop-in file before and after, and the live values that change.
  idempotent:
    support: full
options:
  parameters:
    description:
      - Mapping of sysctl keys in dotted form (V(net.core.somaxconn)) to values.
      - Values are strings or numbers without newlines; multi-word values such as
        V(4096 131072 6291456) are compared with whitespace normalized.
      - Booleans are refused (write V(1) or V(0)).
    type: dict
    required: true
  path:
    description:
      - Absolute path of the drop-in file to own.
    type: path
    required: true
  apply_live:
    description:
      - Write the values to C(/proc/sys) as well as to the file.
      - With V(false), keys whose live value differs are reported as V(persisted).
    type: bool
    default: true
  allow_missing:
    description:
      - Accept keys that this kernel does not have (reported as V(unknown)) instead of failing.
    type: bool
    default: false
  optional:
    description:
      - Keys that may be missing on some kernels (for example V(kernel.yama.ptrace_scope), which
        exists only when the Yama security module is built in). Such keys are written to the file
        and reported as V(unknown) where the kernel lacks them, instead of failing.
    type: list
    elements: str
    default: []
  header:
    description:
      - Comment written at the top of the file, one C(#) line per line of text.
    type: str
  mode:
    description:
      - Permissions of the drop-in file.
    type: raw
    default: "0644"
notes:
  - Keys whose names contain dots inside a component (VLAN interfaces such as C(eth0.100)) are not
    supported.
seealso:
  - module: ansible.posix.sysctl
"""

EXAMPLES = r"""
- name: Tune the kernel for a Redis host
  apes.infra.sysctl_profile:
    path: /etc/sysctl.d/90-apes-infra.conf
    header: Managed by Ansible
    parameters:
      vm.overcommit_memory: 1
      net.core.somaxconn: 65535
      net.ipv4.tcp_rmem: "4096 131072 6291456"
  register: tuning

- name: Show keys that only the file carries (read-only on this host)
  ansible.builtin.debug:
    msg: "{{ tuning.persisted }}"
  when: tuning.persisted | length > 0
"""

RETURN = r"""
parameters:
  description: Per key, the wanted value, the live value found before, the status and whether it changed.
  returned: always
  type: dict
  sample:
    net.core.somaxconn:
      value: "65535"
      previous: "4096"
      status: live
      changed: true
    vm.overcommit_memory:
      value: "1"
      previous: "0"
      status: persisted
      changed: false
file_changed:
  description: Whether the drop-in file was (or in check mode would be) rewritten.
  returned: always
  type: bool
live_changed:
  description: Keys whose live value was (or would be) changed.
  returned: always
  type: list
  elements: str
persisted:
  description: Keys that are read-only on this host; only the file carries them.
  returned: always
  type: list
  elements: str
unknown:
  description:
    - Keys that this kernel does not have (listed in O(optional), or any with O(allow_missing=true);
      otherwise the task fails).
  returned: always
  type: list
  elements: str
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.apes.infra.plugins.module_utils._sysctl import (
    STATUS_PERSISTED,
    STATUS_UNKNOWN,
    SysctlError,
    UnknownKeysError,
    plan_and_apply,
    render_file,
    validate_parameters,
)


def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def main():
    module = AnsibleModule(
        argument_spec={
            "parameters": {"type": "dict", "required": True},
            "path": {"type": "path", "required": True},
            "apply_live": {"type": "bool", "default": True},
            "allow_missing": {"type": "bool", "default": False},
            "optional": {"type": "list", "elements": "str", "default": []},
            "header": {"type": "str"},
            "mode": {"type": "raw", "default": "0644"},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    if not os.path.isabs(path):
        module.fail_json(msg=f"path must be absolute, got {path!r}")

    try:
        wanted = validate_parameters(module.params["parameters"])
    except SysctlError as exc:
        module.fail_json(msg=str(exc))

    content = render_file(wanted, module.params["header"])
    before = _read(path)
    file_changed = before != content

    # Every key is looked up before anything changes: an unknown key (a typo) fails with the kernel and
    # the file untouched. Then live values, before the file: an out-of-range value fails (the values
    # already written put back) before the file would carry it to the next boot.
    missing_ok = None if module.params["allow_missing"] else module.params["optional"]
    try:
        report = plan_and_apply(
            wanted, apply_live=module.params["apply_live"], check_mode=module.check_mode, missing_ok=missing_ok
        )
    except UnknownKeysError as exc:
        module.fail_json(msg=str(exc), parameters=exc.report)
    except SysctlError as exc:
        module.fail_json(msg=str(exc))

    unknown = sorted(k for k, v in report.items() if v["status"] == STATUS_UNKNOWN)

    if file_changed and not module.check_mode:
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            module.fail_json(msg=f"directory {directory} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=".sysctl_profile.", dir=directory)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(content)
            module.atomic_move(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    file_args = module.load_file_common_arguments(
        {"path": path, "mode": module.params["mode"], "owner": "root", "group": "root"}
    )
    if not module.check_mode or os.path.exists(path):
        attrs_changed = module.set_fs_attributes_if_different(file_args, False)
    else:
        attrs_changed = False

    live_changed = sorted(k for k, v in report.items() if v["changed"])
    result = {
        "changed": file_changed or bool(live_changed) or attrs_changed,
        "file_changed": file_changed,
        "parameters": report,
        "live_changed": live_changed,
        "persisted": sorted(k for k, v in report.items() if v["status"] == STATUS_PERSISTED),
        "unknown": unknown,
    }
    if module._diff:
        result["diff"] = [
            {
                "before_header": path,
                "after_header": path,
                "before": before if before is not None else "",
                "after": content,
            },
            {
                "before_header": "live kernel values",
                "after_header": "live kernel values",
                "before": "".join("{} = {}\n".format(k, report[k]["previous"]) for k in live_changed),
                "after": "".join("{} = {}\n".format(k, report[k]["value"]) for k in live_changed),
            },
        ]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
