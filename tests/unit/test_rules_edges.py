"""RuleConfig's limits and the exact framing of the restore text: the edges of
``op25b.kernel.rules`` that survived mutation testing (tests/README.md)."""

from __future__ import annotations

import pytest
from builders import make_policy

from op25b.kernel.ruletext import RuleConfig, render_removal, render_rules
from op25b.policy.model import DaemonConfig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guarded_ports": ()}, "guarded_ports is empty"),
        ({"guarded_ports": (0,)}, "bad port in (0,)"),
        ({"guarded_ports": (25, 65536)}, "bad port in (25, 65536)"),
        ({"guarded_ports": (25,), "queue": -1}, "bad queue range -1 + 1 workers"),
        (
            {"guarded_ports": (25,), "queue": 65535, "workers": 2},
            "bad queue range 65535 + 2 workers",
        ),
    ],
)
def test_rule_config_refuses_with_its_reason(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        RuleConfig(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_rule_config_accepts_its_extremes() -> None:
    assert RuleConfig(guarded_ports=(1, 65535)).guarded_ports == (1, 65535)
    assert RuleConfig(guarded_ports=(25,), queue=65535, workers=1).queue == 65535
    assert RuleConfig(guarded_ports=(25,), queue=65534, workers=2).workers == 2


@pytest.mark.parametrize(("timeout", "cache"), [(0, False), (1, True)])
def test_block_cache_is_on_from_one_second(timeout: int, cache: bool) -> None:
    policy = make_policy(daemon=DaemonConfig(block_cache_timeout=timeout))
    assert RuleConfig.from_policy(policy).block_cache is cache


def test_restore_text_is_two_committed_tables_back_to_back() -> None:
    text = render_rules(RuleConfig(guarded_ports=(25,)), 4)
    filter_part, mangle_part = text.split("*mangle\n")
    assert filter_part.startswith("*filter\n") and filter_part.endswith("\nCOMMIT\n")
    assert mangle_part.endswith("\nCOMMIT\n") and text.count("COMMIT") == 2


def test_render_rules_refuses_an_unknown_ip_version() -> None:
    with pytest.raises(ValueError) as info:
        render_rules(RuleConfig(guarded_ports=(25,)), 5)
    assert str(info.value) == "bad IP version 5"


def test_removal_of_a_lone_chain_or_a_lone_jump() -> None:
    """Half-installed leftovers (a crash between the two tables): each part alone is ours."""
    chain_only = "*filter\n:FORWARD ACCEPT [0:0]\n:OP25B - [0:0]\nCOMMIT\n"
    assert render_removal(chain_only) == "*filter\n-F OP25B\n-X OP25B\nCOMMIT\n"
    jump_only = "*mangle\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -j OP25B\nCOMMIT\n"
    assert render_removal(jump_only) == "*mangle\n-D FORWARD -p tcp -j OP25B\nCOMMIT\n"
