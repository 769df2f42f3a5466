#!/usr/bin/python
# Copyright: apes.infra developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: otel_collector_build
short_description: Build an OpenTelemetry Collector distribution with ocb into a cache, once
version_added: 0.2.0
description:
  - Builds a collector with the OpenTelemetry Collector Builder (ocb) from a manifest and publishes
    it in O(dest) atomically. The build runs in a directory of its own beside O(dest), and is
    renamed into place only when it succeeded and every collector module in the binary is from
    O(release).
  - Builders on the same machine take turns on a lock (O(dest) with C(.lock) appended); a second
    builder waits for the first and then reuses its result instead of building again.
  - Does nothing when O(dest) already holds the binary.
  - Meant for the controller (C(delegate_to=localhost)); the O(ignore:apes.infra.otel_collector)
    role calls it for its V(build) install method.
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is built; the result says whether a build would run.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  dest:
    description:
      - Directory that holds the finished build; the binary is O(dest)/O(name).
      - Its parent directory is created when missing.
    type: path
    required: true
  name:
    description: Name of the collector binary (the manifest's C(dist.name)).
    type: str
    required: true
  release:
    description: The collector release, for example V(0.165.0). The builder is taken at this version,
      and the finished binary must be built from this release only.
    type: str
    required: true
  manifest:
    description:
      - The builder manifest as a dictionary (C(dist), C(receivers), C(exporters), ...).
      - C(dist.output_path) is set by the module.
    type: dict
    required: true
  tools_dir:
    description: Where the builder is installed (C(<tools_dir>/builder-v<release>/builder)).
    type: path
    required: true
  go:
    description: The go command.
    type: str
    default: go
  environment:
    description: Environment for go and the builder (GOPATH, GOMODCACHE, GOCACHE, GOFLAGS, GOOS, GOARCH, ...).
    type: dict
    default: {}
  lock_timeout:
    description: Seconds to wait for another builder holding the lock.
    type: int
    default: 3600
notes:
  - The first build downloads the components' Go modules and takes minutes; later builds of the
    same manifest find O(dest) and return at once.
"""

EXAMPLES = r"""
- name: Build the collector once on the controller
  apes.infra.otel_collector_build:
    dest: /var/cache/apes-infra/otelcol/builds/0.165.0-0123abcd
    name: otelcol
    release: 0.165.0
    tools_dir: /var/cache/apes-infra/otelcol/tools
    manifest:
      dist: {name: otelcol, version: 0.165.0}
      receivers:
        - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver v0.165.0
      exporters:
        - gomod: go.opentelemetry.io/collector/exporter/debugexporter v0.165.0
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
binary:
  description: Path of the built collector.
  returned: always
  type: str
  sample: /var/cache/apes-infra/otelcol/builds/0.165.0-0123abcd/otelcol
built:
  description: Whether this run built the collector (false when it was in the cache, or built by another
    builder while this one waited for the lock).
  returned: always
  type: bool
waited:
  description: Seconds spent waiting for another builder's lock.
  returned: always
  type: float
seconds:
  description: Seconds the build took.
  returned: when built
  type: float
"""

import fcntl
import json
import os
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.apes.infra.plugins.module_utils._otel_artifacts import release_drift


def _lock(path, timeout):
    """Take an exclusive lock on path, waiting up to timeout seconds; return (fd, seconds waited)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    start = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd, time.monotonic() - start
        except BlockingIOError:
            if time.monotonic() - start > timeout:
                os.close(fd)
                return None, time.monotonic() - start
            time.sleep(1)


def _tail(text, lines=40):
    return "\n".join((text or "").splitlines()[-lines:])


def main():
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "release": {"type": "str", "required": True},
            "manifest": {"type": "dict", "required": True},
            "tools_dir": {"type": "path", "required": True},
            "go": {"type": "str", "default": "go"},
            "environment": {"type": "dict", "default": {}},
            "lock_timeout": {"type": "int", "default": 3600},
        },
        supports_check_mode=True,
    )
    p = module.params
    dest = p["dest"].rstrip("/")
    binary = os.path.join(dest, p["name"])
    result = {"changed": False, "binary": binary, "built": False, "waited": 0.0}
    if os.path.isfile(binary):
        module.exit_json(**result)
    if module.check_mode:
        module.exit_json(**{**result, "changed": True})

    parent = os.path.dirname(dest)
    os.makedirs(parent, mode=0o750, exist_ok=True)
    fd, waited = _lock(dest + ".lock", p["lock_timeout"])
    result["waited"] = round(waited, 1)
    if fd is None:
        module.fail_json(msg=f"another build of {dest} held its lock for more than {p['lock_timeout']} s", **result)
    try:
        if os.path.isfile(binary):
            module.exit_json(**result)  # built by the builder we waited for
        env = dict(os.environ)
        env.update({k: str(v) for k, v in p["environment"].items()})
        go = module.get_bin_path(p["go"], opt_dirs=["/usr/local/go/bin"]) or p["go"]
        rc, out, err = module.run_command([go, "version"], environ_update=env)
        if rc != 0:
            module.fail_json(
                msg=f"building the collector needs Go on the controller ({p['go']}: {_tail(err or out, 5)}). "
                "Install Go, set otel_collector_build_go, or use the release or local install method.",
                **result,
            )

        builder_dir = os.path.join(p["tools_dir"], f"builder-v{p['release']}")
        builder = os.path.join(builder_dir, "builder")
        if not os.path.isfile(builder):
            os.makedirs(p["tools_dir"], mode=0o750, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=f"builder-v{p['release']}.", suffix=".partial", dir=p["tools_dir"])
            install_env = dict(env, GOBIN=staging, GOOS="", GOARCH="")
            rc, out, err = module.run_command(
                [go, "install", f"go.opentelemetry.io/collector/cmd/builder@v{p['release']}"],
                environ_update=install_env,
            )
            if rc != 0:
                shutil.rmtree(staging, ignore_errors=True)
                module.fail_json(msg=f"installing the builder v{p['release']} failed: {_tail(err or out)}", **result)
            if os.path.isdir(builder_dir):
                os.rename(builder_dir, f"{builder_dir}.stale-{int(time.time())}")
            os.rename(staging, builder_dir)

        work = tempfile.mkdtemp(prefix=os.path.basename(dest) + ".", suffix=".partial", dir=parent)
        manifest = dict(p["manifest"])
        manifest["dist"] = dict(manifest.get("dist") or {}, name=p["name"], output_path=work)
        config = os.path.join(work, "manifest.json")  # JSON is YAML: the builder reads it as is
        with open(config, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
        started = time.monotonic()
        rc, out, err = module.run_command(
            [builder, f"--config={config}", "--skip-strict-versioning=false"], cwd=work, environ_update=env
        )
        if rc != 0:
            shutil.rmtree(work, ignore_errors=True)
            module.fail_json(msg=f"the collector build failed (rc {rc}); last lines:\n{_tail(err or out)}", **result)
        rc, out, err = module.run_command([go, "version", "-m", os.path.join(work, p["name"])], environ_update=env)
        if rc != 0:
            module.fail_json(msg=f"cannot read the build information of the new binary: {_tail(err or out)}", **result)
        try:
            drift = release_drift(out, p["release"])
        except ValueError as exc:
            module.fail_json(msg=f"the new binary is not a collector of release {p['release']}: {exc}", **result)
        if drift:
            shutil.rmtree(work, ignore_errors=True)
            module.fail_json(
                msg=f"the build mixes releases: {', '.join(drift)} are not from {p['release']}. "
                "Pin every component of the manifest to one release.",
                drift=drift,
                **result,
            )
        if os.path.isdir(dest):
            # A directory without the binary (an interrupted copy by hand): keep it aside.
            os.rename(dest, f"{dest}.incomplete-{int(time.time())}")
        os.rename(work, dest)
        result.update(changed=True, built=True, seconds=round(time.monotonic() - started, 1))
        module.exit_json(**result)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
