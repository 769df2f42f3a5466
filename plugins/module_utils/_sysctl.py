# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure logic for the sysctl_profile module: validation, rendering, live value handling.

Kept free of AnsibleModule so that unit tests can exercise it directly; the file system
access goes through small functions that take the /proc/sys root as an argument.
"""

from __future__ import annotations

import errno
import os
import re

# Key syntax accepted by sysctl(8) for dotted names. Interface names with dots
# (eth0.100) would need the slash form and are not supported.
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)+$")

STATUS_LIVE = "live"
STATUS_PERSISTED = "persisted"
STATUS_UNKNOWN = "unknown"


class SysctlError(ValueError):
    """Invalid input, with a message that names the offending key."""


def normalize_value(value):
    """Return the value as sysctl prints it: words separated by single spaces."""
    return " ".join(str(value).split())


def validate_parameters(parameters):
    """Check keys and values; return {key: normalized string value}.

    Values must be scalars (str, int, float; bool is refused because True/1 is ambiguous
    in YAML) without newlines. Raises SysctlError naming the key.
    """
    if not isinstance(parameters, dict):
        raise SysctlError(f"parameters must be a mapping of sysctl keys to values, got {type(parameters).__name__}")
    result = {}
    for key, value in parameters.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise SysctlError(
                f"parameter {key!r} is not a valid sysctl key (expected dotted names such as net.core.somaxconn)"
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SysctlError(f"parameter {key}: value must be a string or a number, got {type(value).__name__}")
        text = str(value)
        if "\n" in text or "\r" in text:
            raise SysctlError(f"parameter {key}: value must not contain a newline")
        normalized = normalize_value(text)
        if normalized == "":
            raise SysctlError(f"parameter {key}: value must not be empty")
        result[key] = normalized
    return result


def render_file(parameters, header=None):
    """Render a sysctl.d drop-in: an optional comment header, then sorted `key = value` lines."""
    lines = []
    if header:
        for line in header.splitlines():
            lines.append(line if line.startswith("#") else "# " + line if line else "#")
    for key in sorted(parameters):
        lines.append(f"{key} = {parameters[key]}")
    return "\n".join(lines) + "\n"


def key_path(key, proc_sys="/proc/sys"):
    return os.path.join(proc_sys, *key.split("."))


def read_live(key, proc_sys="/proc/sys"):
    """Return the normalized live value, or None when the key does not exist on this kernel."""
    path = key_path(key, proc_sys)
    try:
        with open(path) as fh:
            return normalize_value(fh.read())
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EINVAL):
            # Write-only keys (e.g. vm.drop_caches) cannot be compared: treat as unreadable.
            return None
        raise


def is_writable(key, proc_sys="/proc/sys"):
    return os.access(key_path(key, proc_sys), os.W_OK)


def write_live(key, value, proc_sys="/proc/sys"):
    """Write a value; return True when written, False when the kernel refused it as read-only.

    Other errors (EINVAL for an out-of-range value) are raised so that the caller can report
    them with the key's name.
    """
    try:
        with open(key_path(key, proc_sys), "w") as fh:
            fh.write(value)
        return True
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return False
        raise


class UnknownKeysError(SysctlError):
    """Keys this kernel does not have, found before anything was written; carries the planned report."""

    def __init__(self, keys, report):
        self.keys = keys
        self.report = report
        super().__init__(
            "this kernel has no parameter {}; fix the name, or set allow_missing=true to persist it anyway".format(
                ", ".join(keys)
            )
        )


def plan_and_apply(parameters, proc_sys="/proc/sys", apply_live=True, check_mode=False, missing_ok=None):
    """Compare and (unless check_mode) apply live values.

    Returns {key: {"value", "previous", "status", "changed"}} where status is
    live (the kernel now runs the value), persisted (the key is read-only here: only the file
    carries it) or unknown (no such key on this kernel).

    Every key is looked up before the first write. missing_ok says which keys may be missing: None
    accepts any (reported as unknown), otherwise a collection of key names; any other missing key
    raises UnknownKeysError before the kernel is touched. A write that the kernel refuses (or rounds)
    raises SysctlError after the values already written in this call were put back.
    """
    report = {}
    for key in sorted(parameters):
        previous = read_live(key, proc_sys)
        exists = previous is not None or os.path.exists(key_path(key, proc_sys))
        status = STATUS_UNKNOWN if not exists else STATUS_LIVE if previous == parameters[key] else None
        report[key] = {"value": parameters[key], "previous": previous, "status": status, "changed": False}
    if missing_ok is not None:
        refused = [k for k, e in report.items() if e["status"] == STATUS_UNKNOWN and k not in missing_ok]
        if refused:
            for key, entry in report.items():
                if entry["status"] is None:
                    writable = apply_live and is_writable(key, proc_sys)
                    entry["status"] = STATUS_LIVE if writable else STATUS_PERSISTED
            raise UnknownKeysError(refused, report)
    try:
        for key, entry in report.items():
            if entry["status"] is not None:
                continue
            wanted = entry["value"]
            if not apply_live:
                entry["status"] = STATUS_PERSISTED
                continue
            if check_mode:
                writable = is_writable(key, proc_sys)
                entry["status"] = STATUS_LIVE if writable else STATUS_PERSISTED
                entry["changed"] = writable
                continue
            try:
                written = write_live(key, wanted, proc_sys)
            except OSError as exc:
                raise SysctlError(
                    f"parameter {key}: the kernel refused value {wanted!r}: {exc.strerror or exc}"
                ) from exc
            if not written:
                entry["status"] = STATUS_PERSISTED
                continue
            entry["status"] = STATUS_LIVE
            entry["changed"] = True
            after = read_live(key, proc_sys)
            if after != wanted:
                raise SysctlError(
                    f"parameter {key}: wrote {wanted!r} but the kernel now reports {after!r}"
                    " (value out of range or rounded?)"
                )
        if apply_live and not check_mode:
            _settle(report, proc_sys)
    except SysctlError as exc:
        stuck = _rollback(report, proc_sys)
        if stuck:
            raise SysctlError(f"{exc}; could not restore the previous value of {', '.join(stuck)}") from exc
        raise
    return report


def _rollback(report, proc_sys):
    """Put back the values this call changed, newest first, after a failure; return the keys that
    could not be restored."""
    stuck = []
    for key in reversed(list(report)):
        entry = report[key]
        if not entry["changed"] or entry["previous"] is None:
            continue
        try:
            restored = write_live(key, entry["previous"], proc_sys)
        except OSError:
            restored = False
        if restored:
            entry["changed"] = False
        else:
            stuck.append(key)
    return stuck


def _settle(report, proc_sys, passes=3):
    """Re-apply values that a later write reset as a side effect.

    Some keys change others: writing net.ipv4.ip_forward resets
    net.ipv4.conf.all.accept_redirects, writing vm.dirty_bytes zeroes vm.dirty_ratio. Keys are
    applied in sorted order, so check every live key again and rewrite the ones that moved, until
    nothing moves; keys that keep undoing each other are an error naming them.
    """
    involved = set()
    for _pass in range(passes + 1):
        moved = [k for k, e in report.items() if e["status"] == STATUS_LIVE and read_live(k, proc_sys) != e["value"]]
        if not moved:
            return
        involved.update(moved)
        for key in moved:
            write_live(key, report[key]["value"], proc_sys)
            report[key]["changed"] = True
    raise SysctlError(
        "parameters {} keep being reset by other parameters in the same set; remove the conflicting keys".format(
            ", ".join(sorted(involved))
        )
    )
