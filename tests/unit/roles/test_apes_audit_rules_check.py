"""apes-audit-rules-check (security_baseline): auditctl syntax checked without a kernel."""

from __future__ import annotations

import pytest
from role_scripts import load_role_script

check = load_role_script("security_baseline", "apes-audit-rules-check")
SYSCALLS = {
    "x86_64": {"adjtimex", "settimeofday", "clock_settime", "init_module", "finit_module", "delete_module"},
    "i386": {"adjtimex", "settimeofday", "clock_settime", "stime", "init_module", "finit_module", "delete_module"},
}
VALID = """
## comment
-c
-D
-b 8192
--backlog_wait_time 60000
-f 1
-w /etc/passwd -p wa -k apes_identity
-w /etc/sudoers.d -p wa -k apes_sudoers
-a never,exit -F arch=b64 -S adjtimex -F exe=/usr/sbin/chronyd
-a always,exit -F arch=b64 -S adjtimex,settimeofday,clock_settime -k apes_time
-a always,exit -F arch=b32 -S adjtimex,settimeofday,clock_settime,stime -k apes_time
-a exit,always -F arch=b64 -S init_module -S finit_module -S delete_module -k apes_modules
-a always,exit -F path=/usr/bin/sudo -F perm=x -F auid>=1000 -F auid!=unset -k apes_privileged
-a always,exit -F dir=/etc/redis -F perm=r -F auid>=1000 -F auid!=4294967295 -F key=apes_secret_read
-a always,exit -F arch=b64 -S all -F uid=postgres -k x
-e 2
"""


def test_valid_rules_pass():
    assert check.check_text(VALID, SYSCALLS, "x86_64", "f") == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-q", "unknown option '-q'"),
        ("-w etc/passwd -p wa", "needs an absolute path"),
        ("-w /etc/passwd -p rwz", "permissions are some of r, w, x, a"),
        ("-w /etc/passwd -p wa -F auid>=1000", "not allowed in a watch"),
        ("-w /etc/passwd -k", "-k needs an argument"),
        ("-a always -S adjtimex", "expected LIST,ACTION"),
        ("-a sometimes,exit -S adjtimex", "expected LIST,ACTION"),
        ("-a always,exit -F arch=b64 -S bogus", "-S bogus: no such system call on x86_64"),
        ("-a always,exit -F arch=b32 -S stime,nope", "-S nope: no such system call on i386"),
        ("-a always,exit -S adjtimex -F arch=b64", "-F arch= must come before -S"),
        ("-a always,exit -F arch=b128 -S adjtimex", "arch is b32, b64 or a machine name"),
        ("-a always,exit -F nosuch=1 -S adjtimex", "-F nosuch: unknown field"),
        ("-a always,exit -F auid -S adjtimex", "expected FIELD OPERATOR VALUE"),
        ("-a always,exit -F path=usr/bin/sudo -F perm=x", "an absolute path"),
        ("-a always,exit -F path>/usr/bin/sudo -F perm=x", "only = and != compare paths"),
        ("-a always,exit -F path=/usr/bin/sudo -F perm=q", "permissions are some of r, w, x, a"),
        ("-a always,exit -F path=/x -F auid>=1.5", "a number, unset, or a user or group name"),
        ("-a always,exit -F path=/x -F success=maybe", "0 or 1"),
        ("-a always,exit -F arch=b64 -F a0=zero -S adjtimex", "a number"),
        ("-a always,task -S adjtimex", "-S is for the exit list"),
        ("-a always,exit", "an exit rule needs -S or -F filters"),
        ("-a always,exit -F arch=b64 -S adjtimex -X y", "not allowed in a syscall rule"),
        ("-a always,exit -F arch=b64 -S adjtimex -C auid=", "expected FIELD=FIELD"),
        ("-e 3", "-e needs 0, 1 or 2"),
        ("-f", "-f needs 0, 1 or 2"),
        ("-b many", "-b needs one number"),
        ("-i now", "-i takes no argument"),
        ("-D everything", "-D takes no argument but -k KEY"),
        ("-w /etc/passwd -k " + "k" * 257, "longer than 256 characters"),
    ],
)
def test_invalid_lines_are_named(line, message):
    problems = check.check_text(line, SYSCALLS, "x86_64", "rules")
    assert problems, line
    assert problems[0].startswith("rules:1: ")
    assert message in problems[0]


def test_duplicates_name_the_first_line():
    problems = check.check_text("-w /etc/passwd -p wa\n\n-w  /etc/passwd  -p wa\n", SYSCALLS, "x86_64", "f")
    assert problems == ["f:3: the same rule as line 1 (auditctl: rule exists)"]


def test_without_syscall_tables_names_are_not_checked():
    assert check.check_text("-a always,exit -F arch=b64 -S bogus", None, "x86_64") == []


def test_arch_tables_by_machine():
    assert check._arch_table("b32", "x86_64") == "i386"
    assert check._arch_table("b64", "aarch64") == "aarch64"
    assert check._arch_table("b32", "aarch64") == "arm"
    assert check._arch_table("i686", "x86_64") == "i386"


def test_main_checks_files_and_reports_each_problem(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(check, "load_syscalls", lambda machine: SYSCALLS)
    good = tmp_path / "good.rules"
    good.write_text(VALID)
    bad = tmp_path / "bad.rules"
    bad.write_text("-w /etc/passwd -p wa\n-w relative\n-e 9\n")
    assert check.main([str(good)]) == 0
    assert check.main([str(good), str(bad), str(tmp_path / "missing.rules")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{bad}:2: -w needs an absolute path",
        f"{bad}:3: -e needs 0, 1 or 2",
        f"{tmp_path / 'missing.rules'}: No such file or directory",
    ]


def test_main_warns_without_ausyscall(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(check, "load_syscalls", lambda machine: None)
    rules = tmp_path / "r.rules"
    rules.write_text("-w /etc/passwd -p wa\n")
    assert check.main([str(rules)]) == 0
    assert "ausyscall not found" in capsys.readouterr().err


def test_main_without_files_prints_usage(capsys):
    assert check.main([]) == 2
    assert "apes-audit-rules-check FILE" in capsys.readouterr().out
