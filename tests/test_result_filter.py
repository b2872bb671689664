"""The result filter derived from the rules (rules/kernel_filter.success_only):
failed events of a kind are dropped in the kernel only when no enabled rule
can match one."""
from __future__ import annotations

import pytest

from test_open_filter import engine
from vigil.events import Kind


@pytest.mark.parametrize("cond", [
    "open_read and fd.name = /etc/shadow",
    "open_write and etc_dir",
    "evt.type = openat and evt.rawres >= 0 and fd.name startswith /x",
    "evt.type = openat and fd.num > -1",
    "evt.type = openat and evt.res = SUCCESS",
    "evt.type = openat and evt.failed = false",
    "evt.type = openat and evt.failed != true",
    "evt.type = openat and not evt.rawres < 0",
    "evt.type = openat and not (evt.failed = true or fd.name = /a)",
    "evt.type = openat and (fd.num >= 0 and fd.name = /a or evt.rawres in (3, 4))",
])
def test_success_only_opens(cond):
    assert Kind.OPEN in engine(cond).ok_only_kinds()


@pytest.mark.parametrize("cond", [
    "evt.type = openat and fd.name = /etc/shadow",
    "evt.type = openat and evt.rawres < 0",
    "evt.type = openat and evt.res != SUCCESS",
    "evt.type = openat and evt.failed = true",
    "evt.type = openat and (fd.num >= 0 or fd.name = /a)",
    "evt.type = openat and evt.rawres >= -2",
    "evt.type = openat and not fd.num >= 0",
    "evt.type = openat and evt.res = ENOENT",
])
def test_rules_that_may_match_failures(cond):
    assert Kind.OPEN not in engine(cond).ok_only_kinds()


def test_one_rule_wanting_failures_keeps_them_for_its_kind_only():
    e = engine("open_read and fd.name = /etc/shadow",
               "evt.type = openat and evt.res = EACCES",
               "evt.type = connect and evt.rawres >= 0")
    assert Kind.OPEN not in e.ok_only_kinds()
    assert Kind.CONNECT in e.ok_only_kinds()


def test_connect_in_progress_counts_as_success():
    # Falco's outbound macro form: EINPROGRESS is a connect under way, and
    # the kernel keeps -EINPROGRESS as it keeps successes
    e = engine("evt.type = connect and (evt.rawres >= 0 or evt.res = EINPROGRESS)")
    assert Kind.CONNECT in e.ok_only_kinds()


def test_fd_num_is_the_result_only_where_it_is():
    # for connect, fd.num is the socket the call was made on, not its result
    assert Kind.CONNECT not in engine("evt.type = connect and fd.num >= 0").ok_only_kinds()


def test_kinds_no_rule_looks_at_are_not_listed():
    assert engine("open_read and fd.name = /x").ok_only_kinds() == {Kind.OPEN}


def test_default_rules_drop_failed_opens():
    from vigil.config import expand_rules_paths
    from vigil.rules import default_rules_files
    from vigil.rules.engine import RuleEngine
    e = RuleEngine()
    e.load(expand_rules_paths(default_rules_files()))
    assert Kind.OPEN in e.ok_only_kinds()
