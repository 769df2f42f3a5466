# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: docker_daemon_plan
short_description: What apes.infra.docker_daemon_config would write and whether it needs a restart
version_added: 0.2.0
author:
  - apes.infra developers (@apes-infra)
description:
  - Predicts on the controller, from the live C(daemon.json) text that M(apes.infra.host_probe) read, what
    M(apes.infra.docker_daemon_config) would do with the same settings, with the module's own code
    (rendering, changed and removed keys, the userland proxy fallback), so that a role calls the module
    only when the file would change, and notifies a reload or a restart before it runs.
options:
  _input:
    description: The settings for C(daemon.json).
    type: dict
    required: true
  live:
    description: The live file's text (empty or V(null) when there is none).
    type: str
    required: true
  reloadable_keys:
    description: Top-level keys that dockerd applies on SIGHUP.
    type: list
    elements: str
    required: true
  route_localnet_writable:
    description: Whether the host can set C(route_localnet) (C(/proc/sys/net) writable).
    type: bool
    default: true
  userland_proxy_fallback:
    description: As the module's O(apes.infra.docker_daemon_config#module:userland_proxy_fallback).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Write daemon.json only when it changes, notifying what the change needs
  apes.infra.docker_daemon_config:
    settings: "{{ settings }}"
  when: plan.changed
  notify: "{{ 'docker_restart' if plan.restart_required else 'docker_reload' }}"
  vars:
    plan: "{{ settings | apes.infra.docker_daemon_plan(probe.commands.daemon_json.stdout, reloadable) }}"
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    content:
      description: The file the module would write.
      type: str
    sha1:
      description: SHA-1 of RV(_value.content) (as M(apes.infra.host_probe) reports a file's).
      type: str
    changed:
      description: Whether the content differs from O(live).
      type: bool
    changed_keys:
      description: Top-level keys added, removed or changed.
      type: list
      elements: str
    restart_required:
      description: Whether applying the change needs a restart (a reload is enough otherwise).
      type: bool
    userland_proxy_forced:
      description: Whether the fallback keeps the userland proxy on.
      type: bool
    warning:
      description: The module's warning when the fallback keeps the userland proxy on, else V(null).
      type: str
"""

import hashlib

from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.module_utils._docker_daemon import (
    USERLAND_PROXY_WARNING,
    DaemonConfigError,
    changed_keys,
    removed_keys,
    render,
    restart_required,
    with_userland_proxy_fallback,
)


def docker_daemon_plan(settings, live, reloadable_keys, route_localnet_writable=True, userland_proxy_fallback=False):
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"docker_daemon_plan: settings must be a dictionary, got {type(settings).__name__}")
    forced = False
    if userland_proxy_fallback:
        settings, forced = with_userland_proxy_fallback(settings, bool(route_localnet_writable))
    try:
        content = render(settings)
    except DaemonConfigError as exc:
        raise AnsibleFilterError(f"docker_daemon_plan: {exc}") from exc
    live = live or ""
    keys = changed_keys(live, settings)
    return {
        "content": content,
        "sha1": hashlib.sha1(content.encode("utf-8"), usedforsecurity=False).hexdigest(),
        "changed": live.rstrip("\n") != content.rstrip("\n"),
        "changed_keys": keys,
        "restart_required": restart_required(keys, list(reloadable_keys), removed_keys(live, settings)),
        "userland_proxy_forced": forced,
        "warning": USERLAND_PROXY_WARNING if forced else None,
    }


class FilterModule:
    def filters(self):
        return {"docker_daemon_plan": docker_daemon_plan}
