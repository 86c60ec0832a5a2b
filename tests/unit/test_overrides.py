"""``op25b run``'s command-line overrides of the daemon section: the same limits as the
policy keys they override, a one-line usage error otherwise."""

from __future__ import annotations

import pytest

from op25b.daemon.config import Overrides, apply_overrides
from op25b.errors import EXIT_USAGE, UsageError
from op25b.policy.model import DaemonConfig


@pytest.mark.parametrize("name", ["counters_interval", "abuse_window"])
@pytest.mark.parametrize("value", [1.0, 60.0, 86400.0])
def test_periods_in_the_policy_range_are_taken(name: str, value: float) -> None:
    cfg = apply_overrides(DaemonConfig(), Overrides(**{name: value}))
    assert getattr(cfg, name) == value


@pytest.mark.parametrize("name", ["counters_interval", "abuse_window"])
@pytest.mark.parametrize("value", [0.0, 0.5, -3.0, 86401.0, float("inf"), float("nan")])
def test_periods_outside_the_policy_range_are_usage_errors(name: str, value: float) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(UsageError) as err:
        apply_overrides(DaemonConfig(), Overrides(**{name: value}))
    assert str(err.value).startswith(f"{flag}: must be 1 to 86400 seconds")
    assert err.value.exit_code == EXIT_USAGE


def test_no_override_leaves_the_policy_values() -> None:
    cfg = DaemonConfig()
    assert apply_overrides(cfg, Overrides()) == cfg
