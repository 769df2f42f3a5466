# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure logic for the docker_daemon_config module: rendering, change analysis, validation commands.

Kept free of AnsibleModule so that unit tests can exercise it directly.
"""

from __future__ import annotations

import json

# Keys dockerd applies on SIGHUP (Docker's "configuration reload behavior"); others need a restart.
RELOADABLE_KEYS = (
    "authorization-plugins",
    "debug",
    "default-runtime",
    "insecure-registries",
    "labels",
    "live-restore",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "max-download-attempts",
    "registry-mirrors",
    "runtimes",
    "shutdown-timeout",
)

# dockerd before 23.0 has no --validate. Run in a new user namespace it is not root: it loads and
# checks the configuration (syntax, unknown keys, types, conflicts with flags), then stops at this
# check, before it creates any file, socket or network.
NOT_ROOT_MESSAGE = "needs to be started with root"

MODE_VALIDATE = "dockerd --validate"
MODE_USERNS = "dockerd configuration loader in a user namespace"


USERLAND_PROXY_WARNING = (
    "userland-proxy: false needs a writable /proc/sys/net (dockerd sets route_localnet on its bridges), which is "
    "read-only on this host (a container?); dockerd would not start, so the userland proxy stays on "
    "(a docker-proxy process per published port)"
)


class DaemonConfigError(ValueError):
    """Invalid input, with a message that says what to fix."""


def render(settings):
    """daemon.json text: sorted keys, two-space indent, trailing newline (stable, diff-friendly)."""
    if not isinstance(settings, dict):
        raise DaemonConfigError(f"settings must be a mapping, got {type(settings).__name__}")
    for key in settings:
        if not isinstance(key, str):
            raise DaemonConfigError(f"settings keys must be strings, got {key!r}")
    try:
        return json.dumps(settings, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise DaemonConfigError(f"settings cannot be written as JSON: {exc}") from exc


def with_userland_proxy_fallback(settings, route_localnet_writable):
    """(settings, forced): userland-proxy turned back on where dockerd could not set route_localnet."""
    if settings.get("userland-proxy") is False and not route_localnet_writable:
        return {**settings, "userland-proxy": True}, True
    return settings, False


def parse(text):
    """The settings in a daemon.json text; None, empty, broken or non-object text gives {}."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def changed_keys(before_text, settings):
    """Sorted top-level keys that were added, removed or changed."""
    live = parse(before_text)
    return sorted(key for key in set(live) | set(settings) if live.get(key) != settings.get(key))


def restart_required(keys, reloadable=RELOADABLE_KEYS, removed=()):
    """True when a changed key is not one that dockerd reloads on SIGHUP, or a key was removed.

    A reload applies only the keys present in the file: a key taken out keeps its old value in the
    running daemon until it restarts.
    """
    return bool(removed) or any(key not in reloadable for key in keys)


def removed_keys(before_text, settings):
    """Sorted top-level keys of the live file that the new settings no longer have."""
    return sorted(set(parse(before_text)) - set(settings))


def supports_validate(help_text):
    """Whether `dockerd --help` lists --validate (Docker 23.0 and later)."""
    return "--validate" in (help_text or "")


def validation_command(dockerd, config_path, flags, native):
    """The argv that checks config_path together with the service's flags."""
    if native:
        return [dockerd, "--validate", *flags, "--config-file", config_path]
    return ["unshare", "--user", dockerd, *flags, "--config-file", config_path]


def validation_result(native, rc, stdout, stderr):
    """(ok, message) from a validation run; the message is dockerd's own on failure."""
    output = "\n".join(part.strip() for part in (stdout, stderr) if part and part.strip())
    if native:
        return rc == 0, output
    if NOT_ROOT_MESSAGE in output:
        return True, "configuration OK"
    return False, output or f"dockerd exited with {rc} and no message"
