#!/usr/bin/python
# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_host_info
short_description: What a Linux host offers a Redis server, cgroup-aware
version_added: 0.1.0
description:
  - Reports the memory a service on this host may really use, the smallest of C(MemTotal) and the
    memory limits of the cgroups the service lives in (its own cgroup, if O(unit) is running or has
    run, and every ancestor up to the root, which includes a container's limit). cgroup v1 and v2
    are both read. Redis needs this to size C(maxmemory), since C(MemTotal) inside a container is the
    host's memory, not the container's.
  - Also reports the kernel settings that Redis checks at start and warns about
    (C(net.core.somaxconn) against C(tcp-backlog), C(vm.overcommit_memory), transparent huge
    pages), and whether each can be changed from here (inside a container C(/proc/sys/vm) and
    C(/sys) are read-only and host-wide).
  - Reads files only; nothing is changed.
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
  - apes.infra.attributes.INFO_MODULE
options:
  unit:
    description:
      - A systemd unit whose own cgroup limit (for example C(MemoryMax=)) also counts. Ignored when
        its cgroup does not exist (the unit has never run).
    type: str
notes:
  - Linux only. Swap is not counted.
seealso:
  - module: community.general.redis_info
"""

EXAMPLES = r"""
- name: Read what the host offers Redis
  apes.infra.redis_host_info:
    unit: redis-server.service
  register: host

- name: Give Redis 60 % of the memory it may really use
  ansible.builtin.debug:
    msg: "maxmemory {{ (host.memory.available_bytes * 0.6) | int }}"
"""

RETURN = r"""
memory:
  description: Memory figures in bytes.
  returned: always
  type: dict
  contains:
    total_bytes:
      description: C(MemTotal) from C(/proc/meminfo).
      type: int
      sample: 25276510208
    available_bytes:
      description: The smallest of C(total_bytes) and every cgroup limit found.
      type: int
      sample: 1073741824
    source:
      description: What set C(available_bytes) (V(MemTotal) or C(cgroup <path>)).
      type: str
      sample: cgroup /docker/7b1adca5957c
    cgroup_version:
      description: 1 or 2.
      type: int
      sample: 1
    cgroup_limits:
      description: Each cgroup looked at, most specific first, with its limit (null for none).
      type: list
      elements: dict
      sample: [{"path": "/docker/7b1adca5957c", "limit_bytes": 1073741824}, {"path": "/", "limit_bytes": null}]
kernel:
  description: Kernel settings that Redis checks at start.
  returned: always
  type: dict
  contains:
    somaxconn:
      description: C(net.core.somaxconn) of this network namespace; Redis' C(tcp-backlog) must not exceed it.
      type: int
      sample: 4096
    overcommit_memory:
      description: C(vm.overcommit_memory) (host-wide); Redis warns unless it is 1.
      type: int
      sample: 1
    overcommit_memory_writable:
      description: Whether C(/proc/sys/vm/overcommit_memory) can be written from here.
      type: bool
      sample: false
    thp_enabled:
      description: Active transparent huge pages mode (V(always), V(madvise), V(never)); empty when unknown.
      type: str
      sample: madvise
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.apes.infra.plugins.module_utils._redis_host import (
    HostInfoError,
    ancestors,
    container_root,
    effective_memory,
    limit_file,
    memory_dirs,
    parse_limit,
    parse_meminfo_total,
    parse_proc_cgroup,
)

CGROUP_MOUNT = "/sys/fs/cgroup"


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _read_int(path):
    try:
        return int(_read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _thp_mode(path="/sys/kernel/mm/transparent_hugepage/enabled"):
    try:
        text = _read(path)
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else ""


def memory_info(unit):
    total = parse_meminfo_total(_read("/proc/meminfo"))
    version, pid1_path = parse_proc_cgroup(_read("/proc/1/cgroup"))
    paths = ancestors(pid1_path)
    if unit:
        root = container_root(pid1_path)
        unit_path = ("" if root == "/" else root) + "/system.slice/" + unit
        # The unit's own cgroup first, then the tree above it.
        paths = ancestors(unit_path)
    limits = []
    for path in paths:
        limit_path = os.path.join(memory_dirs(version, CGROUP_MOUNT, [path])[0], limit_file(version))
        if not os.path.exists(limit_path):
            continue
        limits.append((path, parse_limit(version, _read(limit_path))))
    available, source = effective_memory(total, limits)
    return {
        "total_bytes": total,
        "available_bytes": available,
        "source": source,
        "cgroup_version": version,
        "cgroup_limits": [{"path": p, "limit_bytes": v} for p, v in limits],
    }


def kernel_info():
    overcommit = "/proc/sys/vm/overcommit_memory"
    return {
        "somaxconn": _read_int("/proc/sys/net/core/somaxconn"),
        "overcommit_memory": _read_int(overcommit),
        "overcommit_memory_writable": os.access(overcommit, os.W_OK),
        "thp_enabled": _thp_mode(),
    }


def main():
    module = AnsibleModule(argument_spec={"unit": {"type": "str"}}, supports_check_mode=True)
    try:
        memory = memory_info(module.params["unit"])
    except (OSError, HostInfoError) as exc:
        module.fail_json(msg=f"cannot work out the memory available here: {exc}")
    module.exit_json(changed=False, memory=memory, kernel=kernel_info())


if __name__ == "__main__":
    main()
