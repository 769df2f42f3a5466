#!/usr/bin/python
# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: managed_files
short_description: Write a whole set of files and directories in one call, validated and atomic
version_added: 0.2.0
description:
  - Converges every directory, file and secret file of a role, and removes paths, in one module run, where
    M(ansible.builtin.template) costs two module runs per file.
  - Content is compared byte for byte (O(files[].content) encoded as UTF-8); owner, group and mode are compared
    and fixed separately, so metadata drift is corrected without rewriting the content. A file whose content and
    metadata match is not touched.
  - A file whose content changes is written to a candidate in the same directory (C(.<name>.<random><extension>)),
    flushed to disk (fsync), given its owner, group and mode, checked with its O(files[].validate) command, and
    then renamed over the live file (C(os.replace), atomic). Every candidate is checked before the first live file
    is replaced. When one check fails, the module fails naming the path and showing the command's message, no live
    file is replaced and no candidate is left behind.
  - Order of work, whatever the order of the lists, is directories (parents first), then files and secret files,
    then O(absent). RV(changed_paths) keeps the order of the input (O(directories), O(files), O(secret_files),
    O(absent)).
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written; RV(changed_paths) and the diff are predicted.
      - Candidates of changed files are still checked with their O(files[].validate) command, from a private
        temporary directory (same file name), so that a bad file fails in check mode too. The commands must not
        change anything.
      - Where an owner, group, directory or validate program does not exist yet (a package installed earlier in the
        same play would create it), check mode warns and predicts the change instead of failing.
  diff_mode:
    support: full
    details:
      - One diff per changed path. For O(secret_files) the diff says only that the secret content changed.
  idempotent:
    support: full
options:
  directories:
    description:
      - Directories to create or fix. Their parents must exist or be listed too.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path. A symbolic link to a directory is followed.
        type: path
        required: true
      owner:
        description:
          - User name (or number). Omitted, a new directory belongs to the user the module runs as, an existing one
            keeps its owner.
        type: str
      group:
        description:
          - Group name (or number). Omitted, a new directory gets the default group, an existing one keeps its group.
        type: str
      mode:
        description:
          - Permissions as a quoted octal string (V('0750')); numbers are refused, as YAML reads an unquoted
            V(0750) as 488. Symbolic modes are not accepted.
          - Omitted, a new directory gets V('0755') and an existing one keeps its mode.
        type: raw
  files:
    description:
      - Files to write. Their directories must exist or be listed in O(directories).
      - A symbolic link at O(files[].path) is followed, and the file it points to is managed.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      content:
        description:
          - The whole content, as text (written as UTF-8). Template it on the controller with
            C(lookup('ansible.builtin.template', 'x.j2')).
        type: str
        required: true
      owner:
        description:
          - User name (or number). Omitted, a new file belongs to the user the module runs as, an existing one keeps
            its owner.
        type: str
      group:
        description:
          - Group name (or number). Omitted, a new file gets the default group, an existing one keeps its group.
        type: str
      mode:
        description:
          - Permissions as a quoted octal string (V('0640')); numbers are refused.
          - Omitted, a new file gets V('0644') and an existing one keeps its mode.
        type: raw
      validate:
        description:
          - A command that checks the candidate before it replaces the live file, with C(%s) where the candidate's
            path goes (as in M(ansible.builtin.template)), for example V(/usr/sbin/visudo -cf %s).
          - Split into words like a shell would, but run without a shell. The check passes when it exits 0.
          - Runs only when the content changes.
        type: str
  secret_files:
    description:
      - Like O(files), for content that must not appear in output (passwords, keys). Ansible masks
        O(secret_files[].content), diffs say only that the content changed, and a failing validate command's message
        has the secret's lines and words masked.
      - Omitted, O(secret_files[].mode) of a new secret file is V('0600').
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      content:
        description: The whole content, as text (written as UTF-8).
        type: str
        required: true
      owner:
        description: User name (or number); see O(files[].owner).
        type: str
      group:
        description: Group name (or number); see O(files[].group).
        type: str
      mode:
        description:
          - Permissions as a quoted octal string. Omitted, a new file gets V('0600'), an existing one keeps its mode.
        type: raw
      validate:
        description: A command with C(%s) for the candidate; see O(files[].validate).
        type: str
  absent:
    description:
      - Paths to remove (files, links, or directories with everything in them). A path that does not exist is fine.
      - A path must not be listed twice, and no O(absent) path may contain a path managed by the same call.
    type: list
    elements: path
    default: []
notes:
  - SELinux contexts are not managed (Debian does not enable SELinux by default); a new file gets its directory's
    default context.
  - For binary files, use M(ansible.builtin.copy).
seealso:
  - module: ansible.builtin.template
  - module: ansible.builtin.copy
  - module: ansible.builtin.file
"""

EXAMPLES = r"""
- name: Write Redis's configuration, its ACL file and its directories in one call
  apes.infra.managed_files:
    directories:
      - {path: /etc/redis, owner: redis, group: redis, mode: "0750"}
      - {path: /var/lib/redis, owner: redis, group: redis, mode: "0750"}
    files:
      # Templated on the controller: no template module run per file.
      - path: /etc/redis/redis.conf
        content: "{{ lookup('ansible.builtin.template', 'redis.conf.j2') }}"
        owner: redis
        group: redis
        mode: "0640"
        validate: /usr/local/sbin/redis-validate %s
    secret_files:
      - path: /etc/redis/users.acl
        content: "{{ lookup('ansible.builtin.template', 'users.acl.j2') }}"
        owner: redis
        group: redis
        mode: "0600"
    absent:
      - /etc/redis/redis.conf.dpkg-dist
  register: redis_files
  notify: __redis_handler_config_changed

- name: Restart only when the server's configuration changed (not the ACL file)
  ansible.builtin.debug:
    msg: restart needed
  when: "'/etc/redis/redis.conf' in redis_files.content_changed_paths"
"""

RETURN = r"""
changed_paths:
  description:
    - Paths created, rewritten, whose owner, group or mode was fixed, or removed (predicted in check mode), in input
      order (O(directories), O(files), O(secret_files), O(absent)).
  returned: always
  type: list
  elements: str
  sample: ["/etc/redis", "/etc/redis/redis.conf"]
content_changed_paths:
  description: Files (and secret files) whose content was (or would be) written, created ones included, in input order.
  returned: always
  type: list
  elements: str
created_paths:
  description: Directories and files that did not exist, in input order.
  returned: always
  type: list
  elements: str
removed_paths:
  description: Paths of O(absent) that existed, in input order.
  returned: always
  type: list
  elements: str
diff:
  description:
    - In diff mode, one entry per changed path with C(before_header), C(after_header), C(before) and C(after).
    - Content changes show the text. Owner, group and mode changes show one line per attribute (C(mode) followed by
      its value). Directories and removals show their C(state).
  returned: when diff mode is on
  type: list
  elements: dict
"""

import contextlib
import os
import shutil
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.apes.infra.plugins.module_utils._managed_files import (
    ManagedFilesError,
    attribute_lines,
    check_path,
    format_mode,
    group_name,
    mask_secret,
    owner_name,
    parse_mode,
    resolve_group,
    resolve_owner,
    text_for_diff,
    validate_argv,
)

ENTRY_OPTIONS = {
    "path": {"type": "path", "required": True},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "mode": {"type": "raw"},
}
FILE_OPTIONS = {**ENTRY_OPTIONS, "content": {"type": "str", "required": True}, "validate": {"type": "str"}}
SECRET_OPTIONS = {**FILE_OPTIONS, "content": {"type": "str", "required": True, "no_log": True}}
NEW_DIRECTORY_MODE = 0o755
NEW_FILE_MODE = {"file": 0o644, "secret": 0o600}


# The module option that holds each kind of entry (error messages name the option and the index).
_OPTION_OF_KIND = {"directory": "directories", "file": "files", "secret": "secret_files", "absent": "absent"}


class Entry:
    """One path of the request and what it needs."""

    def __init__(self, kind, index, spec):
        self.kind = kind  # directory, file, secret, absent
        self.index = index
        self.spec = spec or {}
        self.where = f"{_OPTION_OF_KIND[kind]}[{index}]"
        self.path = None  # as given (normalized)
        self.real = None  # where it is written (links followed)
        self.uid = self.gid = self.mode = None  # wanted; None: keep
        self.unresolved = []  # owner/group that does not exist yet (check mode only)
        self.exists = False
        self.current = None  # os.stat_result
        self.before = None  # bytes of an existing file
        self.data = None  # bytes to write
        self.content_changed = False
        self.attributes_changed = {}  # name: (before, after)
        self.candidate = None

    @property
    def changed(self):
        if self.kind == "absent":
            return self.exists
        return not self.exists or self.content_changed or bool(self.attributes_changed) or bool(self.unresolved)


def _fail(module, msg, **kwargs):
    module.fail_json(msg=msg, **kwargs)


def parse_entries(module):
    params = module.params
    entries = []
    for kind, key in (("directory", "directories"), ("file", "files"), ("secret", "secret_files")):
        for index, spec in enumerate(params[key]):
            entry = Entry(kind, index, spec)
            entry.path = check_path(spec["path"], entry.where)
            entry.mode = parse_mode(spec.get("mode"), entry.where)
            for attr, resolve in (("owner", resolve_owner), ("group", resolve_group)):
                try:
                    setattr(entry, "uid" if attr == "owner" else "gid", resolve(spec.get(attr), entry.where))
                except ManagedFilesError:
                    if not module.check_mode:
                        raise
                    entry.unresolved.append(attr)
                    module.warn(
                        f"{entry.where}: the {attr} {spec.get(attr)!r} does not exist on this host yet; "
                        f"{entry.path} is reported as changed (the real run fails unless it is created first)"
                    )
            if kind != "directory" and spec.get("validate") is not None:
                validate_argv(spec["validate"], "/x", entry.where)
            entries.append(entry)
    for index, path in enumerate(params["absent"]):
        entry = Entry("absent", index, {"path": path})
        entry.path = check_path(path, entry.where)
        entries.append(entry)

    seen = {}
    for entry in entries:
        if entry.path in seen:
            raise ManagedFilesError(f"{entry.where}: {entry.path} is already listed as {seen[entry.path].where}")
        seen[entry.path] = entry
    for gone in (e for e in entries if e.kind == "absent"):
        for entry in entries:
            if entry.kind != "absent" and entry.path.startswith(gone.path.rstrip("/") + "/"):
                raise ManagedFilesError(f"{gone.where}: removing {gone.path} would remove {entry.path} ({entry.where})")
    return entries


def _compare_attributes(entry, st):
    changes = {}
    if entry.mode is not None and stat.S_IMODE(st.st_mode) != entry.mode:
        changes["mode"] = (format_mode(stat.S_IMODE(st.st_mode)), format_mode(entry.mode))
    if entry.uid is not None and st.st_uid != entry.uid:
        changes["owner"] = (owner_name(st.st_uid), owner_name(entry.uid))
    if entry.gid is not None and st.st_gid != entry.gid:
        changes["group"] = (group_name(st.st_gid), group_name(entry.gid))
    return changes


def plan(module, entries):
    """Read the current state of every entry; decide what each needs."""
    planned_dirs = {e.path for e in entries if e.kind == "directory"}
    for entry in entries:
        if entry.kind == "absent":
            entry.exists = os.path.lexists(entry.path)
            continue
        entry.real = os.path.realpath(entry.path) if os.path.islink(entry.path) else entry.path
        try:
            entry.current = os.stat(entry.real)
            entry.exists = True
        except FileNotFoundError:
            entry.exists = False
        if entry.exists:
            is_dir = stat.S_ISDIR(entry.current.st_mode)
            if entry.kind == "directory" and not is_dir:
                raise ManagedFilesError(f"{entry.where}: {entry.path} exists and is not a directory; remove it first")
            if entry.kind != "directory" and not stat.S_ISREG(entry.current.st_mode):
                what = "a directory" if is_dir else "not a regular file"
                raise ManagedFilesError(f"{entry.where}: {entry.path} exists and is {what}; remove it first")
            entry.attributes_changed = _compare_attributes(entry, entry.current)
        else:
            parent = os.path.dirname(entry.real)
            if not os.path.isdir(parent) and parent not in planned_dirs:
                message = (
                    f"{entry.where}: the directory {parent} of {entry.path} does not exist; "
                    "list it under directories, or install what creates it first"
                )
                if not module.check_mode:
                    raise ManagedFilesError(message)
                module.warn(message + " (check mode: the file is reported as created)")
        if entry.kind == "directory":
            continue
        entry.data = entry.spec["content"].encode("utf-8")
        if entry.exists:
            with open(entry.real, "rb") as fh:
                entry.before = fh.read()
        entry.content_changed = entry.before != entry.data


def _write_candidate(entry, directory, name=None):
    """Write entry.data to a new file in directory with the wanted metadata; return its path."""
    if name is None:
        base = os.path.basename(entry.real)
        fd, path = tempfile.mkstemp(prefix=f".{base}.", suffix=os.path.splitext(base)[1], dir=directory)
    else:
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(entry.data)
            fh.flush()
            uid = entry.uid if entry.uid is not None else (entry.current.st_uid if entry.exists else -1)
            gid = entry.gid if entry.gid is not None else (entry.current.st_gid if entry.exists else -1)
            if uid != -1 or gid != -1:
                os.fchown(fh.fileno(), uid, gid)
            os.fchmod(fh.fileno(), _final_mode(entry))
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(path)
        raise
    return path


def _final_mode(entry):
    if entry.mode is not None:
        return entry.mode
    if entry.exists:
        return stat.S_IMODE(entry.current.st_mode)
    return NEW_FILE_MODE[entry.kind]


def run_validate(module, entry, candidate):
    """Run the entry's validate command on candidate; fail the module (after cleanup) when it refuses."""
    argv = validate_argv(entry.spec["validate"], candidate, entry.where)
    program = argv[0]
    found = program if "/" in program else shutil.which(program)
    if not found or not os.access(found, os.X_OK):
        if module.check_mode:
            module.warn(
                f"{entry.where}: the validate program {program} is not installed yet; {entry.path} is not checked"
            )
            return None
        return f"the validate program {program} does not exist or is not executable"
    rc, out, err = module.run_command(argv, expand_user_and_vars=False)
    if rc == 0:
        return None
    message = (err.strip() or out.strip() or "(no output)").replace(candidate, entry.path)
    if entry.kind == "secret":
        message = mask_secret(message, entry.spec["content"])
    return f"`{entry.spec['validate']}` exited {rc}: {message}"


def check_candidates(module, entries):
    """Check mode: validate each changed file from a private temporary directory."""
    todo = [e for e in entries if e.kind in ("file", "secret") and e.content_changed and e.spec.get("validate")]
    if not todo:
        return
    tmpdir = tempfile.mkdtemp(prefix="managed_files.")
    try:
        for number, entry in enumerate(todo):
            directory = os.path.join(tmpdir, str(number))
            os.mkdir(directory, 0o700)
            with _naming(entry, "write a candidate (check mode) for"):
                candidate = _write_candidate(entry, directory, name=os.path.basename(entry.real))
            error = run_validate(module, entry, candidate)
            if error:
                raise ManagedFilesError(f"validation of {entry.path} failed: {error}")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fix_attributes(path, entry):
    if "owner" in entry.attributes_changed or "group" in entry.attributes_changed:
        os.chown(path, -1 if entry.uid is None else entry.uid, -1 if entry.gid is None else entry.gid)
    if entry.mode is not None:  # after chown, which may clear set-id bits
        os.chmod(path, entry.mode)


@contextlib.contextmanager
def _naming(entry, action):
    """Turn an OSError into a message that names the entry and what was being done."""
    try:
        yield
    except OSError as exc:
        raise ManagedFilesError(f"{entry.where}: cannot {action} {entry.path}: {exc.strerror}") from exc


def apply(module, entries, done):
    directories = sorted((e for e in entries if e.kind == "directory"), key=lambda e: e.path.count("/"))
    for entry in directories:
        if not entry.exists:
            with _naming(entry, "create"):
                os.mkdir(entry.real, NEW_DIRECTORY_MODE)
                if entry.uid is not None or entry.gid is not None:
                    os.chown(entry.real, -1 if entry.uid is None else entry.uid, -1 if entry.gid is None else entry.gid)
                os.chmod(entry.real, NEW_DIRECTORY_MODE if entry.mode is None else entry.mode)
            done.append(entry)
        elif entry.attributes_changed:
            with _naming(entry, "fix the owner, group or mode of"):
                _fix_attributes(entry.real, entry)
            done.append(entry)

    writes = [e for e in entries if e.kind in ("file", "secret") and e.content_changed]
    try:
        for entry in writes:
            with _naming(entry, "write a candidate for"):
                entry.candidate = _write_candidate(entry, os.path.dirname(entry.real))
        for entry in writes:
            if entry.spec.get("validate"):
                error = run_validate(module, entry, entry.candidate)
                if error:
                    raise ManagedFilesError(f"validation of {entry.path} failed: {error}; the live file is unchanged")
        for entry in writes:
            with _naming(entry, "replace"):
                os.replace(entry.candidate, entry.real)
            entry.candidate = None
            done.append(entry)
    finally:
        for entry in writes:
            if entry.candidate and os.path.exists(entry.candidate):
                os.unlink(entry.candidate)
    for directory in sorted({os.path.dirname(e.real) for e in writes}):
        _fsync_dir(directory)

    for entry in entries:
        if entry.kind in ("file", "secret") and not entry.content_changed and entry.attributes_changed:
            with _naming(entry, "fix the owner, group or mode of"):
                _fix_attributes(entry.real, entry)
            done.append(entry)

    for entry in entries:
        if entry.kind == "absent" and entry.exists:
            with _naming(entry, "remove"):
                if os.path.isdir(entry.path) and not os.path.islink(entry.path):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            done.append(entry)


def _state(entry):
    if entry.kind == "directory":
        return "directory"
    if entry.kind == "absent":
        if os.path.islink(entry.path):
            return "link"
        return "directory" if os.path.isdir(entry.path) else "file"
    return "file"


def diffs(entries):
    out = []
    for entry in entries:
        if not entry.changed:
            continue
        path = entry.path
        if entry.kind == "absent":
            out.append(
                {
                    "before_header": path,
                    "after_header": path,
                    "before": f"state: {_state(entry)}\n",
                    "after": "state: absent\n",
                }
            )
            continue
        if entry.kind == "secret" and entry.content_changed:
            out.append(
                {
                    "before_header": f"{path} (secret)",
                    "after_header": f"{path} (secret)",
                    "before": "(secret content)\n" if entry.exists else "",
                    "after": "(secret content changed)\n" if entry.exists else "(secret content written)\n",
                }
            )
        elif entry.kind == "file" and entry.content_changed:
            out.append(
                {
                    "before_header": path,
                    "after_header": path,
                    "before": text_for_diff(entry.before),
                    "after": text_for_diff(entry.data),
                }
            )
        if not entry.exists:
            mode = (
                entry.mode
                if entry.mode is not None
                else (NEW_DIRECTORY_MODE if entry.kind == "directory" else NEW_FILE_MODE[entry.kind])
            )
            after = {
                "state": _state(entry),
                "mode": format_mode(mode),
                "owner": entry.spec.get("owner"),
                "group": entry.spec.get("group"),
            }
            out.append(
                {
                    "before_header": f"{path} (attributes)",
                    "after_header": f"{path} (attributes)",
                    "before": "state: absent\n",
                    "after": attribute_lines(after),
                }
            )
        elif entry.attributes_changed or entry.unresolved:
            changes = dict(entry.attributes_changed)
            for attr in entry.unresolved:
                current = owner_name(entry.current.st_uid) if attr == "owner" else group_name(entry.current.st_gid)
                changes[attr] = (current, entry.spec.get(attr))
            out.append(
                {
                    "before_header": f"{path} (attributes)",
                    "after_header": f"{path} (attributes)",
                    "before": attribute_lines({k: v[0] for k, v in changes.items()}),
                    "after": attribute_lines({k: v[1] for k, v in changes.items()}),
                }
            )
    return out


def main():
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": [], "options": ENTRY_OPTIONS},
            "files": {"type": "list", "elements": "dict", "default": [], "options": FILE_OPTIONS},
            "secret_files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": SECRET_OPTIONS,
                "no_log": False,
            },
            "absent": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True,
    )
    try:
        entries = parse_entries(module)
        plan(module, entries)
    except ManagedFilesError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"cannot read {exc.filename}: {exc.strerror}")

    changed = [e for e in entries if e.changed]
    result = {
        "changed": bool(changed),
        "changed_paths": [e.path for e in changed],
        "content_changed_paths": [e.path for e in entries if e.content_changed],
        "created_paths": [e.path for e in entries if e.kind != "absent" and not e.exists],
        "removed_paths": [e.path for e in entries if e.kind == "absent" and e.exists],
    }
    if module._diff:
        result["diff"] = diffs(entries)

    if module.check_mode:
        try:
            check_candidates(module, entries)
        except ManagedFilesError as exc:
            module.fail_json(msg=str(exc), **result)
        module.exit_json(**result)

    done = []
    try:
        apply(module, entries, done)
    except ManagedFilesError as exc:
        written = [e.path for e in entries if e in done]
        module.fail_json(msg=str(exc), changed=bool(written), changed_paths=written)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
