"""The scenario's tests run on two pytest-xdist workers (molecule.yml: -n 2), one per instance.

Tests that restart, kill or reconfigure a server must never run beside another test on the same
server, and the tests of one instance keep their order. The scheduler below groups the tests by
the instance named in their id (every test is parametrized with one), so each worker runs all the
tests of one instance in order, and the two instances are tested at the same time.
(pytest-xdist's own --dist loadgroup does not group anything with pytest 9.2: it rewrites
Item._nodeid, which pytest 9.2 no longer reads.)
"""

from __future__ import annotations

import re

from xdist.scheduler import LoadScopeScheduling


class ByInstance(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        match = re.search(r"apes-redis-debian1[23]", nodeid)
        return match.group(0) if match else nodeid


def pytest_xdist_make_scheduler(config, log):
    return ByInstance(config, log)
