"""Policies that load without complaint yet do not mean what they say.

An IPv4-mapped IPv6 prefix matches no packet, a provider MTA inside a guarded plan
cannot relay, and an expiry in year 1 must print as a date people can read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_loader import MINIMAL, error, load


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so locations read like 'p.yaml:3:1'."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


MTA = """\
provider_mtas:
  smarthost:
    addresses: [{}]
"""


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize(
    ("value", "fix"),
    [
        ('"::ffff:100.64.0.0/112"', "write the IPv4 prefix 100.64.0.0/16"),
        ('"::ffff:100.64.0.10"', "write the IPv4 address 100.64.0.10"),
        ('"::FFFF:6440:0/112"', "write the IPv4 prefix 100.64.0.0/16"),
    ],
)
def test_an_ipv4_mapped_plan_prefix_is_refused(value: str, fix: str) -> None:
    text = MINIMAL.replace("[100.64.0.0/16]", f"[{value}]")
    msg = error(text)
    assert msg.startswith("p.yaml:7:16: plans.residential.prefixes[0]: IPv4-mapped address in ")
    assert msg.endswith(f"never appears in a packet; {fix}")


@pytest.mark.usefixtures("in_tmp")
def test_an_ipv4_mapped_pool_line_is_refused_with_its_line() -> None:
    text = MINIMAL.replace("prefixes: [100.64.0.0/16]", "prefixes_file: pool.txt")
    pool = "".join(f"100.{64 + i // 256}.{i % 256}.0/24\n" for i in range(300))
    msg = error(text, {"pool.txt": pool + "::ffff:192.0.2.0/120\n"})
    assert msg == (
        "pool.txt:301:1: plans.residential.prefixes_file: IPv4-mapped address in"
        " '::ffff:192.0.2.0/120' never appears in a packet; write the IPv4 prefix 192.0.2.0/24"
    )


@pytest.mark.usefixtures("in_tmp")
def test_ipv6_prefixes_around_the_mapped_range_still_load() -> None:
    text = MINIMAL.replace("[100.64.0.0/16]", '["::/0", "::fffe:0:0/96", "::ffff:0:0/95"]')
    assert "host bits set" in error(text)  # /95 is a typo, as ever
    text = MINIMAL.replace("[100.64.0.0/16]", '["::/1", "::fffe:0:0/96"]')
    assert len(load(text).policy.plans[0].prefixes) == 2


@pytest.mark.usefixtures("in_tmp")
def test_an_ipv4_mapped_provider_mta_is_refused() -> None:
    msg = error(MINIMAL + MTA.format('"::ffff:203.0.113.25"'))
    assert msg == (
        "p.yaml:10:17: provider_mtas.smarthost.addresses[0]: IPv4-mapped address in"
        " '::ffff:203.0.113.25' never appears in a packet; write the IPv4 address 203.0.113.25"
    )


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize(
    ("plans", "warned"),
    [
        ("[100.64.0.0/16]", True),
        ('[0.0.0.0/0, "::/0"]', True),
        ("[100.65.0.0/16]", False),
    ],
)
def test_a_provider_mta_inside_a_guarded_plan_is_warned(plans: str, warned: bool) -> None:
    text = MINIMAL.replace("[100.64.0.0/16]", plans) + MTA.format("100.64.0.25")
    warnings = [str(w) for w in load(text).warnings]
    expected = (
        "p.yaml:10:17: provider_mtas.smarthost.addresses[0]: provider MTA 100.64.0.25 is a"
        " subscriber of non-exempt plan 'residential': its own mail out to other MXes"
        " would be blocked"
    )
    assert warnings == ([expected] if warned else [])


@pytest.mark.usefixtures("in_tmp")
def test_a_provider_mta_in_an_exempt_plan_or_exemption_is_not_warned() -> None:
    exempt = MINIMAL.replace("exempt: false", "exempt: true") + MTA.format("100.64.0.25")
    assert load(exempt).warnings == ()
    exemption = (
        MINIMAL
        + MTA.format("100.64.0.25")
        + "exemptions:\n  - {prefix: 100.64.0.0/24, ticket: T-1, expires: 2099-01-01}\n"
    )
    assert load(exemption).warnings == ()


@pytest.mark.usefixtures("in_tmp")
def test_an_expiry_in_year_one_reads_as_a_date() -> None:
    text = MINIMAL + "exemptions:\n  - {prefix: 100.64.7.7/32, ticket: T-1, expires: 0001-01-01}\n"
    (warning,) = load(text).warnings
    assert "expired at 0001-01-02 00:00:00 UTC (expires: 0001-01-01)" in str(warning)


@pytest.mark.usefixtures("in_tmp")
def test_a_pool_file_of_one_endless_line_is_quoted_by_its_start() -> None:
    text = MINIMAL.replace("prefixes: [100.64.0.0/16]", "prefixes_file: pool.txt")
    msg = error(text, {"pool.txt": "100.64.0.0/16\n" + "1" * 1_000_000 + "\n"})
    assert msg == (
        "pool.txt:2:1: plans.residential.prefixes_file: not an IP prefix: '"
        + "1" * 40
        + "'... (1000000 characters)"
    )


@pytest.mark.usefixtures("in_tmp")
def test_a_long_provider_mta_value_is_quoted_by_its_start() -> None:
    msg = error(MINIMAL + MTA.format("2" * 5000))
    assert msg.endswith("not an IP prefix: '" + "2" * 40 + "'... (5000 characters)")


@pytest.mark.usefixtures("in_tmp")
def test_a_pool_file_with_a_byte_order_mark_loads() -> None:
    text = MINIMAL.replace("prefixes: [100.64.0.0/16]", "prefixes_file: pool.txt")
    Path("pool.txt").write_bytes(b"\xef\xbb\xbf100.64.0.0/16\r\n100.65.0.0/16\r\n")
    assert len(load(text).policy.plans[0].prefixes) == 2


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_an_expiry_past_the_calendar_in_utc_says_so(when: str) -> None:
    text = MINIMAL + f"exemptions:\n  - {{prefix: 100.64.7.7/32, ticket: T-1, expires: {when}}}\n"
    assert error(text).endswith(f"expires: out of range: '{when}' is outside years 1-9999 in UTC")
