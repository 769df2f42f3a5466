#!/usr/bin/python
# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_tune
short_description: Compute PostgreSQL settings for the memory, CPUs and storage this host really has
version_added: 0.1.0
description:
  - Reads the memory and CPUs that the calling process can use and the kind of storage under
    O(data_directory), and returns C(postgresql.conf) settings for them, following the formulas
    of pgtune (U(https://pgtune.leopard.in.ua), 2025 revision) with the changes listed below.
  - Needs no input; every detected value can be overridden.
  - B(Memory) is the lower of C(MemTotal) in C(/proc/meminfo) and the cgroup memory limit. On
    cgroup v2 it is the lowest C(memory.max), on cgroup v1 the lowest C(memory.limit_in_bytes), from the
    process's own cgroup (C(/proc/self/cgroup), resolved through C(/proc/self/mountinfo)) up to the
    visible root. A container limited to 2 GiB gets settings for 2 GiB, not for its host.
  - B(CPUs) is the size of the CPU set the process may run on (C(sched_getaffinity), which
    reflects cgroup cpusets), capped by the lowest CPU quota on the way up (v2 C(cpu.max), v1
    C(cpu.cfs_quota_us / cpu.cfs_period_us)), rounded up.
  - B(Storage) comes from C(/sys/block/<disk>/queue/rotational) of the disk holding
    O(data_directory) (a partition counts as its disk; C(nvme*) disks are V(nvme)). When the
    file system has no block device (overlayfs in a container, network file systems) and every
    physical disk of the host agrees, that answer is used; otherwise V(ssd), pgtune's default.
  - The module only reads. It never changes the host, so it runs the same in check mode.
  - 'Formulas, with RAM the memory above in kB and C the number of CPUs:'
  - 'C(max_connections): O(max_connections), else per profile V(web) 200, V(oltp) 300, V(dw) 40,
    V(mixed) 100, V(desktop) 20.'
  - 'C(shared_buffers): RAM / 4 (V(desktop): RAM / 16), rounded down to 8kB pages.'
  - 'C(effective_cache_size): RAM * 3 / 4 (V(desktop): RAM / 4).'
  - 'C(maintenance_work_mem): RAM / 16 (V(dw): RAM / 8), at most 8GB. When that reaches 2GB,
    C(autovacuum_work_mem) = 2GB so that autovacuum workers do not each take it.'
  - 'C(work_mem): (RAM - shared_buffers) / ((max_connections + W) * 3), divided by 2 for V(dw)
    and V(mixed) and by 6 for V(desktop), at least 4MB (PostgreSQL''s default). W is
    C(max_worker_processes): C when C >= 4, else PostgreSQL''s default 8.'
  - 'C(wal_buffers): 3% of shared_buffers, at most 16MB, rounded up to 16MB above 14MB, at least 32kB.'
  - 'C(min_wal_size) / C(max_wal_size): V(web) 1GB/4GB, V(oltp) 2GB/8GB, V(dw) 4GB/16GB,
    V(mixed) 1GB/4GB, V(desktop) 100MB/2GB.'
  - 'C(checkpoint_completion_target): 0.9.'
  - 'C(default_statistics_target): 500 for V(dw), else 100.'
  - 'C(random_page_cost): 4 on V(hdd), else 1.1. C(effective_io_concurrency): V(hdd) 2,
    V(ssd) 200, V(san) 300, V(nvme) 1000.'
  - 'Parallelism, only when C >= 4: C(max_worker_processes) = C(max_parallel_workers) = C;
    C(max_parallel_workers_per_gather) = ceil(C / 2), at most 4 except for V(dw);
    C(max_parallel_maintenance_workers) = ceil(C / 2), at most 4. C(autovacuum_max_workers) = 4
    from 16 CPUs, 5 from 32.'
  - 'C(wal_compression): V(lz4) from PostgreSQL 15 (cheaper on CPU than pglz), else V(on).'
  - 'C(jit): V(off) for V(web), V(oltp) and V(mixed) (compiling costs more than it saves on short
    queries); left at the default for V(dw) and V(desktop).'
  - 'C(huge_pages): V(try) when shared_buffers >= 2GB, else V(off). Reserving the pages in the
    kernel (C(vm.nr_hugepages)) is the caller''s job.'
  - 'V(desktop) also sets C(wal_level=minimal) and C(max_wal_senders=0).'
  - 'Differences from pgtune: the memory, CPUs and storage are detected; C(shared_buffers),
    C(effective_cache_size) and C(wal_buffers) are rounded down to whole 8kB pages so that
    C(SHOW) prints exactly the returned value.'
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
attributes:
  check_mode:
    support: full
    details:
      - The module only reads the host.
  diff_mode:
    support: N/A
    details:
      - The module only reads the host.
  idempotent:
    support: full
options:
  profile:
    description:
      - Workload the settings are for. V(web) and V(oltp) favour many short queries, V(dw) large
        analytical ones, V(mixed) a bit of both, V(desktop) a developer machine running other
        programs too.
    type: str
    choices: [web, oltp, dw, mixed, desktop]
    default: mixed
  max_connections:
    description:
      - Connections to plan for. Default depends on O(profile) (see above).
    type: int
  version:
    description:
      - PostgreSQL major version the settings are for (V(wal_compression) and V(jit) depend on it).
    type: int
    default: 17
  data_directory:
    description:
      - Where the data lives, to find its storage. The nearest existing parent directory is used.
    type: path
    default: /var/lib/postgresql
  total_memory:
    description:
      - Memory to plan for instead of the detected value, for example V(16GB), V(512MB) or a
        number of bytes. At least 256MB.
    type: str
  cpus:
    description:
      - CPUs to plan for instead of the detected value.
    type: int
  storage:
    description:
      - Storage type. V(auto) detects V(ssd), V(hdd) or V(nvme) as described above; V(san) can
        only be given.
    type: str
    choices: [auto, ssd, hdd, san, nvme]
    default: auto
notes:
  - The settings are a starting point for a host that runs mainly PostgreSQL. Measure, then
    override what your workload needs.
seealso:
  - name: pgtune
    description: The calculator whose formulas this module starts from.
    link: https://pgtune.leopard.in.ua
  - name: PostgreSQL manual, Resource Consumption
    description: What each memory setting does.
    link: https://www.postgresql.org/docs/current/runtime-config-resource.html
"""

EXAMPLES = r"""
- name: Compute settings for this host
  apes.infra.pg_tune:
    profile: oltp
    version: 17
    data_directory: /var/lib/postgresql/17/main
  register: tuning

- name: Show them
  ansible.builtin.debug:
    msg: "{{ tuning.settings }}"

- name: Plan for a bigger host than this one (capacity planning)
  apes.infra.pg_tune:
    total_memory: 64GB
    cpus: 16
    storage: ssd
    profile: dw
"""

RETURN = r"""
settings:
  description: C(postgresql.conf) parameters and values, as PostgreSQL's C(SHOW) prints them.
  returned: always
  type: dict
  sample:
    max_connections: "100"
    shared_buffers: 512MB
    effective_cache_size: 1536MB
    maintenance_work_mem: 128MB
    work_mem: 4MB
    huge_pages: "off"
host:
  description: What the settings were computed from, and where each value came from.
  returned: always
  type: dict
  contains:
    memory_bytes:
      description: Memory planned for.
      type: int
      sample: 2147483648
    memory_source:
      description: Where the memory figure came from.
      type: str
      sample: "cgroup v1 /docker/0123abcd: memory.limit_in_bytes"
    cpus:
      description: CPUs planned for.
      type: int
      sample: 1
    cpu_source:
      description: Where the CPU figure came from.
      type: str
      sample: "cgroup v1 /docker/0123abcd: cpu.cfs_quota_us"
    storage:
      description: Storage type planned for.
      type: str
      sample: ssd
    storage_source:
      description: Where the storage type came from.
      type: str
      sample: /sys/block/nvme0n1/queue/rotational = 0
    profile:
      description: Workload profile used.
      type: str
      sample: mixed
    version:
      description: PostgreSQL major version used.
      type: int
      sample: 17
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.apes.infra.plugins.module_utils._pg_tune import (
    PgTuneError,
    cgroup_cpu_limit,
    cgroup_memory_limit,
    compute_settings,
    effective_cpus,
    effective_memory,
    mount_source_for,
    parse_meminfo,
    parse_size,
    storage_from_sys,
)


def _read(path):
    with open(path) as fh:
        return fh.read()


def _existing_parent(path):
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path)
    return path


def main():
    module = AnsibleModule(
        argument_spec={
            "profile": {"type": "str", "default": "mixed", "choices": ["web", "oltp", "dw", "mixed", "desktop"]},
            "max_connections": {"type": "int"},
            "version": {"type": "int", "default": 17},
            "data_directory": {"type": "path", "default": "/var/lib/postgresql"},
            "total_memory": {"type": "str"},
            "cpus": {"type": "int"},
            "storage": {"type": "str", "default": "auto", "choices": ["auto", "ssd", "hdd", "san", "nvme"]},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        proc_cgroup = _read("/proc/self/cgroup")
        mountinfo = _read("/proc/self/mountinfo")
    except OSError:
        proc_cgroup = mountinfo = ""

    try:
        if params["total_memory"] is not None:
            memory = parse_size(params["total_memory"])
            memory_source = "total_memory option"
        else:
            meminfo = parse_meminfo(_read("/proc/meminfo"))
            limit, limit_source = cgroup_memory_limit(proc_cgroup, mountinfo)
            memory, limited = effective_memory(meminfo, limit)
            memory_source = limit_source if limited else f"/proc/meminfo MemTotal ({limit_source})"

        if params["cpus"] is not None:
            if params["cpus"] < 1:
                raise PgTuneError(f"cpus: expected a positive integer, got {params['cpus']}")
            cpus = params["cpus"]
            cpu_source = "cpus option"
        else:
            affinity = len(os.sched_getaffinity(0))
            quota, quota_source = cgroup_cpu_limit(proc_cgroup, mountinfo)
            cpus = effective_cpus(affinity, quota)
            cpu_source = f"{affinity} CPUs in the affinity mask; {quota_source}"

        if params["storage"] != "auto":
            storage = params["storage"]
            storage_source = "storage option"
        else:
            path = _existing_parent(params["data_directory"])
            st = os.stat(path)
            storage, storage_source = storage_from_sys(
                os.major(st.st_dev), os.minor(st.st_dev), mount_source=mount_source_for(path, mountinfo)
            )
            if storage is None:
                storage, storage_source = "ssd", storage_source + "; assuming ssd"

        settings = compute_settings(
            memory,
            cpus,
            storage=storage,
            profile=params["profile"],
            max_connections=params["max_connections"],
            version=params["version"],
        )
    except PgTuneError as exc:
        module.fail_json(msg=str(exc))

    module.exit_json(
        changed=False,
        settings=settings,
        host={
            "memory_bytes": memory,
            "memory_source": memory_source,
            "cpus": cpus,
            "cpu_source": cpu_source,
            "storage": storage,
            "storage_source": storage_source,
            "profile": params["profile"],
            "version": params["version"],
        },
    )


if __name__ == "__main__":
    main()
