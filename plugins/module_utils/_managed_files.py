# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure helpers behind apes.infra.managed_files: modes, owners, validate commands, diffs and
the masking of secrets in a validator's message. Standard library only (runs on targets)."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex

_MODE = re.compile(r"^0?[0-7]{3,4}$")
MASK = "********"
# Secret fragments shorter than this are not masked one by one (they would mask most of a message);
# whole lines and words of the secret from this length on are.
MIN_MASKED = 4
# Besides whitespace, what separates a value from its key or its quotes in configuration files.
_WORD_DELIMITERS = re.compile(r"[\s=:,;'\"<>()\[\]{}]+")


class ManagedFilesError(Exception):
    """Input the module refuses, with a message that names the entry."""


def parse_mode(value, where):
    """A quoted octal string ('0640', '640', '2750') to an int; None stays None.

    Numbers are refused: YAML reads an unquoted 0640 as the number 416 (or 640 as 640), and
    either would silently become another mode."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str):
        raise ManagedFilesError(
            f"{where}: mode must be a quoted octal string such as '0640', got {type(value).__name__} {value!r} "
            "(unquoted, YAML reads 0640 as the number 416)"
        )
    if not _MODE.match(value):
        raise ManagedFilesError(
            f"{where}: mode {value!r} is not an octal mode such as '0640' (symbolic modes are not accepted)"
        )
    mode = int(value, 8)
    if mode > 0o7777:
        raise ManagedFilesError(f"{where}: mode {value!r} is out of range")
    return mode


def format_mode(mode):
    return None if mode is None else format(mode, "04o")


def resolve_owner(name, where):
    """A user name (or number) to a uid; None stays None. KeyError-free: raises ManagedFilesError."""
    return _resolve(name, where, "owner", pwd.getpwnam)


def resolve_group(name, where):
    return _resolve(name, where, "group", grp.getgrnam)


def _resolve(name, where, what, lookup):
    if name is None:
        return None
    try:
        return lookup(name)[2]
    except KeyError:
        if name.isdigit():
            return int(name)
        raise ManagedFilesError(f"{where}: unknown {what} {name!r} on this host") from None


def owner_name(uid):
    try:
        return pwd.getpwuid(uid)[0]
    except KeyError:
        return str(uid)


def group_name(gid):
    try:
        return grp.getgrgid(gid)[0]
    except KeyError:
        return str(gid)


def check_path(path, where):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ManagedFilesError(f"{where}: path must be absolute, got {path!r}")
    normal = os.path.normpath(path)
    if normal == "/":
        raise ManagedFilesError(f"{where}: refusing to manage /")
    return normal


def validate_argv(command, candidate, where):
    """The validate command as argv, with every %s replaced by the candidate's path (no shell)."""
    if "%s" not in command:
        raise ManagedFilesError(f"{where}: validate must contain %s (the candidate file), got {command!r}")
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ManagedFilesError(f"{where}: validate {command!r} cannot be split into words: {exc}") from None
    return [word.replace("%s", candidate) for word in words]


def mask_secret(text, secret):
    """text with every line, and every word, of secret (from MIN_MASKED characters) replaced by MASK.

    Words are split at whitespace and again at the characters that separate values in configuration
    files (= : , ; quotes, brackets), so that in "requirepass=x" both the pair and x are masked.

    A validator that fails on a secret file may quote the offending line; this keeps the secret
    out of the failure message while the rest of the message stays readable."""
    if not text or not secret:
        return text
    fragments = {secret}
    for line in secret.splitlines():
        fragments.add(line.strip())
        fragments.update(line.split())
        fragments.update(_WORD_DELIMITERS.split(line))
    for fragment in sorted((f for f in fragments if len(f) >= MIN_MASKED), key=len, reverse=True):
        text = text.replace(fragment, MASK)
    return text


def attribute_lines(attributes):
    """{'mode': '0640', 'owner': 'root'} as 'mode: 0640\\nowner: root\\n' for a diff (None values left out)."""
    return "".join(f"{key}: {value}\n" for key, value in attributes.items() if value is not None)


def text_for_diff(data):
    """Bytes of a file as text for a diff, or a placeholder when they are not UTF-8."""
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"(binary content, {len(data)} bytes)\n"
