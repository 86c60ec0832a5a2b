"""Tests for op25b.policy.loader: the example, exact error positions, pool files, warnings."""

from __future__ import annotations

import os
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from op25b.policy import addr
from op25b.policy.loader import (
    MAX_REDUNDANT_LISTED,
    LoadResult,
    PolicyError,
    load_policy,
    load_policy_text,
)
from op25b.policy.model import Action, DownMode, Location, SyslogTransport
from op25b.policy.summary import summarize

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policies" / "example.yaml"
NOW = datetime(2025, 6, 1, tzinfo=UTC)

HEAD = """\
version: 1
guarded_ports: [25]
action: drop
"""
MINIMAL = (
    HEAD
    + """\
plans:
  residential:
    exempt: false
    prefixes: [100.64.0.0/16]
"""
)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so locations read like 'p.yaml:3:1'."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(files: dict[str, str]) -> None:
    for name, body in files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(body)


def load(text: str, files: dict[str, str] | None = None, name: str = "p.yaml") -> LoadResult:
    write({name: text, **(files or {})})
    return load_policy(name, now=NOW)


def error(text: str, files: dict[str, str] | None = None, name: str = "p.yaml") -> str:
    with pytest.raises(PolicyError) as info:
        load(text, files, name)
    return str(info.value)


# ------------------------------------------------------------------ the example


def test_example_loads_with_only_the_expired_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = load_policy("policies/example.yaml", now=NOW)
    policy = result.policy
    assert policy.source == "policies/example.yaml"
    assert policy.guarded_ports == frozenset({25})
    assert policy.action is Action.DROP
    assert [p.name for p in policy.plans] == ["residential", "mobile", "business-static"]
    assert [p.exempt for p in policy.plans] == [False, False, True]
    assert [str(w) for w in result.warnings] == [
        "policies/example.yaml:85:14: exemptions[1].expires: exemption for 100.64.8.8/32"
        " (ticket ABUSE-0999) expired at 2024-07-01 00:00:00 UTC (expires: 2024-06-30);"
        " it is ignored"
    ]
    mobile = policy.plans[1].prefixes
    assert mobile.location(0) == Location("policies/pools/mobile.txt", 10, 1)
    assert addr.prefix_text(mobile.prefixes[-1]) == "2001:db8:200::/40"
    residential = policy.plans[0]
    assert residential.location == Location("policies/example.yaml", 46, 3)
    assert residential.prefixes.location(1) == Location("policies/example.yaml", 50, 9)
    mta = policy.provider_mtas[0]
    assert mta.addresses == (
        addr.parse_address("203.0.113.25"),
        addr.parse_address("2001:db8:25::25"),
    )
    assert [e.ticket for e in policy.exemptions if e.active(NOW)] == ["ABUSE-1234"]
    assert policy.daemon.syslog.facility == "local5"
    assert policy.daemon.on_daemon_down is DownMode.STATIC


def test_example_lab_addresses_land_in_the_right_plans() -> None:
    policy = load_policy(EXAMPLE, now=NOW).policy

    def plans_of(text: str) -> list[str]:
        version, value = addr.parse_address(text)
        return [
            plan.name
            for plan in policy.plans
            if any(addr.contains(p, version, value) for p in plan.prefixes)
        ]

    assert plans_of("100.64.0.10") == ["residential"]
    assert plans_of("2001:db8:100::66") == ["residential"]
    assert plans_of("198.51.100.10") == ["business-static"]
    assert plans_of("2001:db8:b00::10") == ["business-static"]
    assert plans_of("100.64.200.3") == ["residential", "business-static"]  # LPM: business
    assert plans_of("192.0.2.25") == []
    assert plans_of("2001:db8:c0::25") == []


def test_example_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    text = summarize(load_policy("policies/example.yaml", now=NOW), now=NOW)
    assert "guarded ports  25" in text
    assert "residential      guarded  1 IPv4 prefix (65,536 addresses)" in text
    assert "from policies/pools/mobile.txt" in text
    assert "active   100.64.7.7/32  ABUSE-1234  through 2027-01-31 UTC  verified own MX" in text
    assert "EXPIRED  100.64.8.8/32" in text
    assert "warnings (1)" in text


# ------------------------------------------------------------- broken policies


MTA_POLICY = (
    MINIMAL
    + """\
provider_mtas:
  smarthost:
    addresses: [203.0.113.25, 203.0.113.256]
"""
)

BROKEN: list[tuple[str, str, str]] = [
    (
        "bad MTA address (the README's example)",
        MTA_POLICY,
        "p.yaml:10:31: provider_mtas.smarthost.addresses[1]: not an IP address: '203.0.113.256'",
    ),
    (
        "guarded submission port 587",
        MINIMAL.replace("[25]", "[25, 587]"),
        "p.yaml:2:21: guarded_ports[1]: port 587 (submission, RFC 6409) is never guarded:"
        " it is how blocked subscribers send mail through their provider, with SMTP AUTH",
    ),
    (
        "guarded submissions port 465",
        MINIMAL.replace("[25]", "[465]"),
        "p.yaml:2:17: guarded_ports[0]: port 465 (submissions, RFC 8314) is never guarded:"
        " it is how blocked subscribers send mail through their provider, with SMTP AUTH",
    ),
    (
        "duplicate port",
        MINIMAL.replace("[25]", "[25, 2525, 25]"),
        "p.yaml:2:27: guarded_ports[2]: duplicate port 25 (first at p.yaml:2:17)",
    ),
    (
        "port out of range",
        MINIMAL.replace("[25]", "[65536]"),
        "p.yaml:2:17: guarded_ports[0]: 65536 is out of range (1..65535)",
    ),
    (
        "empty port list",
        MINIMAL.replace("[25]", "[]"),
        "p.yaml:2:16: guarded_ports: at least one port is required",
    ),
    (
        "YAML 1.1 octal port",
        MINIMAL.replace("[25]", "[025]"),
        "p.yaml:2:17: guarded_ports[0]: write integers in plain decimal, got '025'",
    ),
    (
        "port as a string",
        MINIMAL.replace("[25]", '["25"]'),
        "p.yaml:2:17: guarded_ports[0]: expected an integer, got a string ('25')",
    ),
    (
        "unknown action",
        MINIMAL.replace("action: drop", "action: block"),
        "p.yaml:3:9: action: expected one of drop | reject | monitor, got a string ('block')",
    ),
    (
        "yes is not a boolean here",
        MINIMAL.replace("exempt: false", "exempt: no"),
        "p.yaml:6:13: plans.residential.exempt: ambiguous boolean 'no': write true or false",
    ),
    (
        "quoted boolean",
        MINIMAL.replace("exempt: false", 'exempt: "false"'),
        "p.yaml:6:13: plans.residential.exempt: expected true or false,"
        " got a string ('false'); remove the quotes",
    ),
    (
        "host bits set",
        MINIMAL.replace("100.64.0.0/16", "100.64.1.0/16"),
        "p.yaml:7:16: plans.residential.prefixes[0]: host bits set in '100.64.1.0/16'"
        " (did you mean 100.64.0.0/16?)",
    ),
    (
        "not a prefix",
        MINIMAL.replace("100.64.0.0/16", "100.64.0.0/33"),
        "p.yaml:7:16: plans.residential.prefixes[0]: prefix length /33 is longer than /32"
        " in '100.64.0.0/33'",
    ),
    (
        "duplicate plan name",
        MINIMAL + "  residential:\n    exempt: true\n    prefixes: [198.51.100.0/24]\n",
        "p.yaml:8:3: plans.residential: duplicate key 'residential' (first at p.yaml:5:3)",
    ),
    (
        "same prefix in two plans",
        MINIMAL + "  business:\n    exempt: true\n    prefixes: [198.51.100.0/24, 100.64.0.0/16]\n",
        "p.yaml:10:33: plans.business.prefixes[1]: 100.64.0.0/16 is already in plan"
        " 'residential' at p.yaml:7:16",
    ),
    (
        "same prefix twice in one plan",
        MINIMAL.replace("[100.64.0.0/16]", '[100.64.0.0/16, "100.64.0.0/16"]'),
        "p.yaml:7:31: plans.residential.prefixes[1]: duplicate prefix 100.64.0.0/16"
        " (first at p.yaml:7:16)",
    ),
    (
        "same MTA address twice (different spelling)",
        MINIMAL
        + "provider_mtas:\n  a:\n    addresses: ['2001:db8:25::25']\n"
        + "  b:\n    addresses: ['2001:DB8:25:0::25']\n",
        "p.yaml:12:17: provider_mtas.b.addresses[0]: duplicate address 2001:db8:25::25"
        " (also provider_mtas.a.addresses[0] at p.yaml:10:17)",
    ),
    (
        "MTA given as a prefix",
        MINIMAL + "provider_mtas:\n  smarthost:\n    addresses: [203.0.113.0/24]\n",
        "p.yaml:10:17: provider_mtas.smarthost.addresses[0]: provider MTA addresses are"
        " single IP addresses, not prefixes: '203.0.113.0/24'",
    ),
    (
        "unknown top-level key",
        MINIMAL + "exemption: []\n",
        "p.yaml:8:1: exemption: unknown key 'exemption' (allowed: version, guarded_ports,"
        " action, plans, provider_mtas, exemptions, daemon)",
    ),
    (
        "unknown plan key",
        MINIMAL.replace("exempt: false", "exempt: false\n    prefix: 10.0.0.0/8"),
        "p.yaml:7:5: plans.residential.prefix: unknown key 'prefix'"
        " (allowed: exempt, prefixes, prefixes_file)",
    ),
    (
        "missing required top-level key",
        MINIMAL.replace("action: drop\n", ""),
        "p.yaml:1:1: missing required key 'action'",
    ),
    (
        "missing exempt",
        MINIMAL.replace("    exempt: false\n", ""),
        "p.yaml:6:5: plans.residential: missing required key 'exempt'",
    ),
    (
        "plan without prefixes key",
        MINIMAL.replace("    prefixes: [100.64.0.0/16]\n", ""),
        "p.yaml:6:5: plans.residential: missing required key 'prefixes' or 'prefixes_file'",
    ),
    (
        "empty plan",
        MINIMAL.replace("[100.64.0.0/16]", "[]"),
        "p.yaml:7:15: plans.residential.prefixes: plan 'residential' has no prefixes",
    ),
    (
        "no plans",
        HEAD + "plans: {}\n",
        "p.yaml:4:8: plans: at least one plan is required",
    ),
    (
        "list where a mapping is expected",
        HEAD + "plans:\n  - residential\n",
        "p.yaml:5:3: plans: expected a mapping, got a list",
    ),
    (
        "mapping where a list is expected",
        MINIMAL.replace("[100.64.0.0/16]", "{a: 1}"),
        "p.yaml:7:15: plans.residential.prefixes: expected a list, got a mapping",
    ),
    (
        "bad plan name",
        MINIMAL.replace("residential:", "residential plan:"),
        "p.yaml:5:3: plans.residential plan: bad plan name 'residential plan': use 1-32"
        " letters, digits, '-' or '_', starting with a letter or digit",
    ),
    (
        "version 2",
        MINIMAL.replace("version: 1", "version: 2"),
        "p.yaml:1:10: version: unsupported policy version 2 (this op25b reads version 1)",
    ),
    (
        "version as a string",
        MINIMAL.replace("version: 1", 'version: "1"'),
        "p.yaml:1:10: version: expected an integer, got a string ('1')",
    ),
    (
        "YAML syntax error",
        MINIMAL.replace("action: drop", "action: [drop"),
        "p.yaml:4:6: invalid YAML: expected ',' or ']', but got ':'"
        " (while parsing a flow sequence at p.yaml:3:9)",
    ),
    (
        "tab indentation",
        MINIMAL.replace("    exempt", "\texempt"),
        "p.yaml:6:1: invalid YAML: found character '\\t' that cannot start any token",
    ),
    (
        "two documents",
        MINIMAL + "---\nversion: 1\n",
        "p.yaml:8:1: invalid YAML: but found another document"
        " (expected a single document in the stream at p.yaml:1:1)",
    ),
    (
        "merge keys",
        MINIMAL.replace("    exempt: false", "    <<: {exempt: false}"),
        "p.yaml:6:5: plans.residential: merge keys ('<<') are not supported; write the keys out",
    ),
    (
        "python tag",
        MINIMAL.replace("action: drop", "action: !!python/name:os.system drop"),
        "p.yaml:3:9: action: unsupported YAML tag 'tag:yaml.org,2002:python/name:os.system'",
    ),
    ("empty file", "", "p.yaml:1:1: empty policy (expected a mapping)"),
    ("a list at the top", "- 1\n", "p.yaml:1:1: expected a mapping, got a list"),
    (
        "NUL character",
        MINIMAL.replace("drop", "dr\0op"),
        "p.yaml:3:11: invalid YAML: unacceptable character U+0000",
    ),
]


@pytest.mark.parametrize(("what", "text", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_policy(in_tmp: Path, what: str, text: str, expected: str) -> None:
    assert error(text) == expected


def test_policy_error_attributes(in_tmp: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load(MTA_POLICY)
    err = info.value
    assert err.location == Location("p.yaml", 10, 31)
    assert err.path == "provider_mtas.smarthost.addresses[1]"
    assert err.message == "not an IP address: '203.0.113.256'"


def test_missing_policy_file(in_tmp: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("nope.yaml")
    assert info.value.location is None
    assert str(info.value) == "nope.yaml: cannot read policy: No such file or directory"


def test_policy_not_utf8(in_tmp: Path) -> None:
    Path("p.yaml").write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    with pytest.raises(PolicyError) as info:
        load_policy("p.yaml")
    assert str(info.value) == "p.yaml:8:6: not UTF-8 text"


# -------------------------------------------------------------------- exemptions

EXEMPTION = (
    MINIMAL
    + """\
exemptions:
  - prefix: 100.64.7.7/32
    ticket: ABUSE-1234
    expires: 2027-01-31
    reason: verified own MX
"""
)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "expires: 2027-01-31",
            "expires: 2027-02-30",
            "p.yaml:11:14: exemptions[0].expires: not a valid date: '2027-02-30'",
        ),
        (
            "expires: 2027-01-31",
            "expires: 2027-01-31 12:00:00",
            "p.yaml:11:14: exemptions[0].expires: timestamp without a timezone:"
            " '2027-01-31 12:00:00'; add Z or +HH:MM, or give a date",
        ),
        (
            "expires: 2027-01-31",
            "expires: next tuesday",
            "p.yaml:11:14: exemptions[0].expires: expected a date (YYYY-MM-DD) or a timestamp"
            " with a timezone, got a string ('next tuesday')",
        ),
        (
            "    ticket: ABUSE-1234\n",
            "",
            "p.yaml:9:5: exemptions[0]: missing required key 'ticket'",
        ),
        (
            "    expires: 2027-01-31\n",
            "",
            "p.yaml:9:5: exemptions[0]: missing required key 'expires'",
        ),
        (
            "ticket: ABUSE-1234",
            'ticket: ""',
            "p.yaml:10:13: exemptions[0].ticket: expected a ticket reference, got an empty string",
        ),
        (
            "100.64.7.7/32",
            "100.64.7.7/24",
            "p.yaml:9:13: exemptions[0].prefix: host bits set in '100.64.7.7/24'"
            " (did you mean 100.64.7.0/24?)",
        ),
    ],
)
def test_broken_exemption(in_tmp: Path, old: str, new: str, expected: str) -> None:
    assert error(EXEMPTION.replace(old, new)) == expected


def test_date_means_through_that_utc_day(in_tmp: Path) -> None:
    exemption = load(EXEMPTION).policy.exemptions[0]
    assert exemption.expires == datetime(2027, 2, 1, tzinfo=UTC)
    assert exemption.active(datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC))
    assert not exemption.active(datetime(2027, 2, 1, tzinfo=UTC))
    assert exemption.location == Location("p.yaml", 9, 5)
    assert exemption.reason == "verified own MX"


@pytest.mark.parametrize(
    ("written", "instant"),
    [
        ("2027-01-31T18:00:00+01:00", datetime(2027, 1, 31, 17, tzinfo=UTC)),
        ("2027-01-31 18:00:00Z", datetime(2027, 1, 31, 18, tzinfo=UTC)),
        ('"2027-01-31"', datetime(2027, 2, 1, tzinfo=UTC)),  # a quoted date is still a date
        ("9999-12-31", datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_expiry_forms(in_tmp: Path, written: str, instant: datetime) -> None:
    text = EXEMPTION.replace("2027-01-31", written)
    assert load(text).policy.exemptions[0].expires == instant


def test_expired_exemption_warns_relative_to_now(in_tmp: Path) -> None:
    write({"p.yaml": EXEMPTION})
    assert load_policy("p.yaml", now=datetime(2027, 1, 31, 12, tzinfo=UTC)).warnings == ()
    late = load_policy("p.yaml", now=datetime(2027, 2, 1, tzinfo=UTC))
    assert [str(w) for w in late.warnings] == [
        "p.yaml:11:14: exemptions[0].expires: exemption for 100.64.7.7/32 (ticket ABUSE-1234)"
        " expired at 2027-02-01 00:00:00 UTC (expires: 2027-01-31); it is ignored"
    ]


def test_exemption_without_effect_warns(in_tmp: Path) -> None:
    text = (
        MINIMAL
        + "  business:\n    exempt: true\n    prefixes: [198.51.100.0/24]\n"
        + "exemptions:\n"
        + "  - {prefix: 192.0.2.7/32, ticket: T-1, expires: 2030-01-01}\n"
        + "  - {prefix: 198.51.100.7/32, ticket: T-2, expires: 2030-01-01}\n"
        + "  - {prefix: 100.0.0.0/8, ticket: T-3, expires: 2030-01-01}\n"
        + "  - {prefix: 100.64.9.9/32, ticket: T-4, expires: 2030-01-01}\n"
    )
    assert [str(w) for w in load(text).warnings] == [
        "p.yaml:12:5: exemptions[0]: exemption for 192.0.2.7/32 has no effect:"
        " no plan covers it, so its sources are not subscribers",
        "p.yaml:13:5: exemptions[1]: exemption for 198.51.100.7/32 has no effect:"
        " its sources are in exempt plan 'business' already",
    ]


# ---------------------------------------------------------------------- warnings


def test_redundant_prefix_under_same_flag_warns(in_tmp: Path) -> None:
    text = MINIMAL + "  mobile:\n    exempt: false\n    prefixes: [100.64.5.0/24]\n"
    assert [str(w) for w in load(text).warnings] == [
        "p.yaml:10:16: plans.mobile.prefixes[0]: 100.64.5.0/24 is redundant: plan"
        " 'residential' already covers it with 100.64.0.0/16 at p.yaml:7:16 (both not exempt)"
    ]


def test_carve_out_is_not_redundant(in_tmp: Path) -> None:
    # residential /16 > business /29 (exempt) > mobile /30: the /30 changes decisions
    text = (
        MINIMAL
        + "  business:\n    exempt: true\n    prefixes: [100.64.200.0/29]\n"
        + "  mobile:\n    exempt: false\n    prefixes: [100.64.200.0/30, 100.64.200.0/31]\n"
    )
    assert [str(w) for w in load(text).warnings] == [
        "p.yaml:13:33: plans.mobile.prefixes[1]: 100.64.200.0/31 is redundant: plan 'mobile'"
        " already covers it with 100.64.200.0/30 at p.yaml:13:16 (both not exempt)"
    ]


def test_redundancy_warnings_are_capped(in_tmp: Path) -> None:
    lines = "".join(f"100.64.{i // 256}.{i % 256}/32\n" for i in range(MAX_REDUNDANT_LISTED + 5))
    text = MINIMAL + "  mobile:\n    exempt: false\n    prefixes_file: m.txt\n"
    warnings = load(text, {"m.txt": lines}).warnings
    assert len(warnings) == MAX_REDUNDANT_LISTED + 1
    assert str(warnings[-1]) == (
        f"m.txt:{MAX_REDUNDANT_LISTED + 1}:1: plans.mobile.prefixes_file:"
        " 5 more redundant prefixes from here on"
    )


# -------------------------------------------------------------------- pool files

POOL_POLICY = (
    HEAD
    + """\
plans:
  mobile:
    exempt: false
    prefixes_file: pools/mobile.txt
"""
)


def test_pool_file_comments_blanks_and_positions(in_tmp: Path) -> None:
    pool = "# header\n\n100.65.0.0/20   # pgw-1\r\n   2001:db8:200::/40\n10.9.9.9\n  # end\n"
    plist = load(POOL_POLICY, {"pools/mobile.txt": pool}).policy.plans[0].prefixes
    assert [addr.prefix_text(p) for p in plist] == [
        "100.65.0.0/20",
        "2001:db8:200::/40",
        "10.9.9.9/32",
    ]
    assert [plist.location(i) for i in range(3)] == [
        Location("pools/mobile.txt", 3, 1),
        Location("pools/mobile.txt", 4, 4),
        Location("pools/mobile.txt", 5, 1),
    ]


def test_pool_and_inline_prefixes_together(in_tmp: Path) -> None:
    text = POOL_POLICY + "    prefixes: [100.66.0.0/16]\n"
    plist = load(text, {"pools/mobile.txt": "100.65.0.0/20\n"}).policy.plans[0].prefixes
    assert plist.files == ("p.yaml", "pools/mobile.txt")
    # inline prefixes first, then the file's, whatever the key order
    assert plist.location(0) == Location("p.yaml", 8, 16)
    assert plist.location(1) == Location("pools/mobile.txt", 1, 1)


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (
            "100.65.0.0/20\n\n  100.65.16.1/20  # typo\n",
            "pools/mobile.txt:3:3: plans.mobile.prefixes_file: host bits set in"
            " '100.65.16.1/20' (did you mean 100.65.16.0/20?)",
        ),
        (
            "# pools\n100.65.0.256/24\n",
            "pools/mobile.txt:2:1: plans.mobile.prefixes_file: not an IP address: '100.65.0.256'",
        ),
        (
            "100.65.0.0/20 100.65.16.0/20\n",
            "pools/mobile.txt:1:1: plans.mobile.prefixes_file: one prefix per line,"
            " got '100.65.0.0/20 100.65.16.0/20'",
        ),
        (
            "2001:db8:200::/129\n",
            "pools/mobile.txt:1:1: plans.mobile.prefixes_file: prefix length /129 is longer"
            " than /128 in '2001:db8:200::/129'",
        ),
        (
            "100.65.0.0/20\n100.65.0.0/20\n",
            "pools/mobile.txt:2:1: plans.mobile.prefixes_file: duplicate prefix 100.65.0.0/20"
            " (first at pools/mobile.txt:1:1)",
        ),
        (
            "# nothing yet\n\n",
            "p.yaml:7:20: plans.mobile.prefixes_file: plan 'mobile' is empty:"
            " pools/mobile.txt holds no prefixes",
        ),
    ],
)
def test_broken_pool_file(in_tmp: Path, pool: str, expected: str) -> None:
    assert error(POOL_POLICY, {"pools/mobile.txt": pool}) == expected


def test_missing_pool_file(in_tmp: Path) -> None:
    assert error(POOL_POLICY) == (
        "p.yaml:7:20: plans.mobile.prefixes_file: cannot read pools/mobile.txt:"
        " No such file or directory"
    )


def test_pool_file_not_utf8(in_tmp: Path) -> None:
    write({"p.yaml": POOL_POLICY})
    Path("pools").mkdir()
    Path("pools/mobile.txt").write_bytes(b"100.65.0.0/20\n# \xff\n")
    with pytest.raises(PolicyError) as info:
        load_policy("p.yaml")
    assert str(info.value) == "pools/mobile.txt:2:3: plans.mobile.prefixes_file: not UTF-8 text"


def test_pool_path_is_shown_relative_like_the_policy(in_tmp: Path) -> None:
    files = {"policies/pools/mobile.txt": "100.65.0.0/20\n100.65.0.0/20\n"}
    assert error(POOL_POLICY, files, name="policies/p.yaml") == (
        "policies/pools/mobile.txt:2:1: plans.mobile.prefixes_file: duplicate prefix"
        " 100.65.0.0/20 (first at policies/pools/mobile.txt:1:1)"
    )


def test_pool_prefix_already_in_another_plan(in_tmp: Path) -> None:
    text = POOL_POLICY + "  residential:\n    exempt: false\n    prefixes: [100.65.0.0/20]\n"
    assert error(text, {"pools/mobile.txt": "# a\n100.65.0.0/20\n"}) == (
        "p.yaml:10:16: plans.residential.prefixes[0]: 100.65.0.0/20 is already in plan"
        " 'mobile' at pools/mobile.txt:2:1"
    )


def test_load_policy_text_resolves_pools_against_base_dir(in_tmp: Path) -> None:
    write({"policies/pools/mobile.txt": "100.65.0.0/20\n"})
    result = load_policy_text(POOL_POLICY, source="stdin", base_dir=Path("policies"), now=NOW)
    assert result.policy.plans[0].prefixes.location(0) == Location(
        "policies/pools/mobile.txt", 1, 1
    )


def _generate_pool(n: int) -> str:
    # distinct /32s in 10.0.0.0/8 plus a tail of IPv6 /64s, with a comment now and then
    v4 = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32" for i in range(n - n // 10)]
    v6 = [f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::/64  # v6" for i in range(n // 10)]
    return "# generated\n" + "\n".join(v4 + v6) + "\n"


def test_100k_line_pool_loads_quickly(in_tmp: Path) -> None:
    write({"pools/mobile.txt": _generate_pool(100_000)})
    start = time.process_time()
    result = load(POOL_POLICY)
    elapsed = time.process_time() - start
    assert len(result.policy.plans[0].prefixes) == 100_000
    assert result.warnings == ()
    assert elapsed < 5.0  # ~0.4 s measured; the bound only catches an O(n^2) regression


# ------------------------------------------------------------------------ daemon

DAEMON = MINIMAL + "daemon:\n"


@pytest.mark.parametrize(
    ("address", "transport", "host", "port"),
    [
        ("/dev/log", SyslogTransport.UNIX, "/dev/log", 0),
        ("udp://192.0.2.5:514", SyslogTransport.UDP, "192.0.2.5", 514),
        ("'udp://[2001:db8::1]:514'", SyslogTransport.UDP, "2001:db8::1", 514),
        ("tcp://syslog.example.net:6514", SyslogTransport.TCP, "syslog.example.net", 6514),
    ],
)
def test_syslog_addresses(
    in_tmp: Path, address: str, transport: SyslogTransport, host: str, port: int
) -> None:
    text = DAEMON + f"  syslog:\n    address: {address}\n    facility: mail\n"
    syslog = load(text).policy.daemon.syslog
    assert (syslog.transport, syslog.address, syslog.port, syslog.facility) == (
        transport,
        host,
        port,
        "mail",
    )


def test_daemon_section_fully_set(in_tmp: Path) -> None:
    text = DAEMON + textwrap.indent(
        textwrap.dedent(
            """\
            queue: 7
            workers: 2
            on_daemon_down: closed
            abuse_log: /tmp/blocked.jsonl
            counters_interval: 2.5
            on_error: drop
            abuse_window: 60
            v6_aggregate: 56
            fast_path: true
            block_cache_timeout: 30
            """
        ),
        "  ",
    )
    d = load(text).policy.daemon
    assert (d.queue, d.workers, d.on_daemon_down, d.abuse_log) == (
        7,
        2,
        DownMode.CLOSED,
        "/tmp/blocked.jsonl",
    )
    assert (d.counters_interval, d.on_error, d.abuse_window, d.v6_aggregate) == (
        2.5,
        "drop",
        60.0,
        56,
    )
    assert (d.fast_path, d.block_cache_timeout) == (True, 30)


@pytest.mark.parametrize("text", [MINIMAL, DAEMON], ids=["absent", "empty"])
def test_daemon_defaults_are_the_documented_values(in_tmp: Path, text: str) -> None:
    """The defaults of README's daemon table, as values (not the loader against itself)."""
    d = load(text).policy.daemon
    assert (d.queue, d.workers, d.on_daemon_down, d.abuse_log) == (
        0,
        1,
        DownMode.STATIC,
        "/var/log/op25b/blocked.jsonl",
    )
    assert (d.syslog.transport, d.syslog.address, d.syslog.facility) == (
        SyslogTransport.UNIX,
        "/dev/log",
        "local5",
    )
    assert (d.counters_interval, d.on_error, d.abuse_window, d.v6_aggregate) == (
        60.0,
        "accept",
        300.0,
        64,
    )
    assert (d.fast_path, d.block_cache_timeout) == (False, 0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("queue: 65536", "p.yaml:9:10: daemon.queue: 65536 is out of range (0..65535)"),
        ("workers: 0", "p.yaml:9:12: daemon.workers: 0 is out of range (1..64)"),
        ("v6_aggregate: 129", "p.yaml:9:17: daemon.v6_aggregate: 129 is out of range (0..128)"),
        (
            "block_cache_timeout: -1",
            "p.yaml:9:24: daemon.block_cache_timeout: -1 is out of range (0..1073741)",
        ),
        (
            "counters_interval: 0",
            "p.yaml:9:22: daemon.counters_interval: must be a number > 0, got 0",
        ),
        (
            "abuse_window: .inf",
            "p.yaml:9:17: daemon.abuse_window: expected a plain finite number, got '.inf'",
        ),
        (
            "fast_path: on",
            "p.yaml:9:14: daemon.fast_path: ambiguous boolean 'on': write true or false",
        ),
        (
            "on_daemon_down: fail-open",
            "p.yaml:9:19: daemon.on_daemon_down: expected one of static | open | closed,"
            " got a string ('fail-open')",
        ),
        (
            "syslog: {facility: local9}",
            "p.yaml:9:22: daemon.syslog.facility: expected one of kern | user | mail | daemon"
            " | auth | syslog | lpr | news | uucp | cron | authpriv | ftp | local0 | local1"
            " | local2 | local3 | local4 | local5 | local6 | local7, got a string ('local9')",
        ),
        (
            "syslog: {address: 'udp://2001:db8::1:514'}",
            "p.yaml:9:21: daemon.syslog.address: write IPv6 hosts in brackets"
            " (udp://[2001:db8::1]:514)",
        ),
        (
            "syslog: {address: 'udp://192.0.2.5'}",
            "p.yaml:9:21: daemon.syslog.address: expected a socket path like /dev/log,"
            " udp://host:port or tcp://host:port, got 'udp://192.0.2.5'",
        ),
        (
            "syslog: {address: 'udp://192.0.2.5:0'}",
            "p.yaml:9:21: daemon.syslog.address: expected a port 1..65535 after the host,"
            " got 'udp://192.0.2.5:0'",
        ),
        (
            "syslog: {address: 'udp://192.0.2.500:514'}",
            "p.yaml:9:21: daemon.syslog.address: not an IP address: '192.0.2.500'",
        ),
        (
            "syslog: {address: dev/log}",
            "p.yaml:9:21: daemon.syslog.address: expected a socket path like /dev/log,"
            " udp://host:port or tcp://host:port, got 'dev/log'",
        ),
        (
            "threads: 4",
            "p.yaml:9:3: daemon.threads: unknown key 'threads' (allowed: queue, workers,"
            " on_daemon_down, abuse_log, syslog, counters_interval, on_error, abuse_window,"
            " v6_aggregate, fast_path, block_cache_timeout, rules_check_interval, metrics)",
        ),
    ],
)
def test_broken_daemon(in_tmp: Path, line: str, expected: str) -> None:
    assert error(DAEMON + "  " + line + "\n") == expected


# ------------------------------------------------------------- never a traceback


EXAMPLE_TEXT = EXAMPLE.read_text()
_LINES = EXAMPLE_TEXT.splitlines(keepends=True)


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    lines = list(_LINES)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "substitute", "insert", "duplicate"]))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        else:
            j = draw(st.integers(0, max(0, len(line) - 1)))
            char = draw(
                st.sampled_from(list(":-[]{}#'\"\t &*!|>%@`,?/.0123456789xyz \n\x00\u00e9"))
                | st.characters()
            )
            cut = j + (1 if kind == "substitute" else 0)
            lines[i] = line[:j] + char + line[cut:]
        if not lines:
            break
    return "".join(lines)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_example())
def test_mutated_example_never_raises_anything_but_policy_error(text: str) -> None:
    try:
        result = load_policy_text(text, source="example.yaml", now=NOW, base_dir=EXAMPLE.parent)
    except PolicyError as err:
        assert err.message
        assert str(err)
    else:
        assert isinstance(result, LoadResult)


def test_default_now_is_current_time(in_tmp: Path) -> None:
    text = EXEMPTION.replace("2027-01-31", "2000-01-01")
    write({"p.yaml": text})
    assert len(load_policy(os.fspath("p.yaml")).warnings) == 1
