"""The YAML policy loader: policy text -> validated, typed ``model.Policy``.

Owns every check of policy format version 1 (``policies/example.yaml`` is the annotated
reference) and reading ``prefixes_file`` pool files. Typed reads of YAML
nodes with their positions are ``op25b.policy.yamlnodes`` (the only yaml user);
parsing a pool file's text is ``op25b.policy.pools``; the whole-policy overlap
analysis (a duplicate prefix is an error, a redundant prefix or a no-op exemption a
warning) is ``op25b.policy.overlap``. Neither of the last two knows YAML: this module
hands them plain data and turns what they find into ``PolicyError`` and
``PolicyWarning`` with the same locations.

Errors and warnings read ``file:line:col: key.path: message`` with 1-based line and
column. Bad input only ever raises ``PolicyError``.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from op25b.policy import addr
from op25b.policy.daemonsection import read_daemon
from op25b.policy.model import (
    Action,
    DaemonConfig,
    Exemption,
    Location,
    NetworkColumn,
    Plan,
    Policy,
    Prefix,
    PrefixList,
    ProviderMta,
)
from op25b.policy.overlap import MAX_REDUNDANT_LISTED as MAX_REDUNDANT_LISTED  # a loader limit too
from op25b.policy.overlap import PlanBuild, check_overlaps
from op25b.policy.pools import PoolLineError, parse_pool, parse_prefix
from op25b.policy.problems import PolicyError, PolicyWarning
from op25b.policy.sourcefiles import (
    MAX_POLICY_BYTES,
    MAX_POOL_BYTES,
    ReadRefused,
    describe_limit,
    describe_size,
    read_regular_file,
)
from op25b.policy.yamlnodes import Node, NodeReader, compose, is_null

__all__ = ["LoadResult", "PolicyError", "PolicyWarning", "load_policy", "load_policy_text"]

SUPPORTED_VERSION = 1

# Submission ports (RFC 6409, RFC 8314) are the sanctioned way out for subscribers
# whose port 25 is blocked; guarding them would cut off legitimate mail entirely.
SUBMISSION_PORTS = {587: "submission, RFC 6409", 465: "submissions, RFC 8314"}

# Plan and MTA names end up in abuse-log records, counters and kernel set names, so
# keep them to a portable alphabet (and free of dots, which separate key paths).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")

# ----------------------------------------------------------------------------- API


@dataclass(frozen=True)
class LoadResult:
    """A validated policy and the warnings found while loading it."""

    policy: Policy
    warnings: tuple[PolicyWarning, ...]


def load_policy(
    path: str | os.PathLike[str],
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Load and validate a policy file.

    Locations name the file as given (``policies/example.yaml``); ``prefixes_file``
    entries resolve against the policy file's directory. ``now`` (aware) only decides
    which exemptions get an "expired" warning; it defaults to the current time.
    Every failure -- bad input, an unreadable or oversized file, running out of
    memory, even a bug -- is a one-line ``PolicyError``, so `op25b check` never
    prints a traceback and a failed reload leaves the daemon ready for the next.
    ``progress`` (optional) hears the plan prefixes read so far, now and then.
    """
    source = os.fspath(path)
    _check_now(now)
    with _load_failures(source):
        try:
            data = read_regular_file(source, MAX_POLICY_BYTES, _POLICY_LIMIT)
        except ReadRefused as exc:
            raise PolicyError(None, "", f"{source}: cannot read policy: {exc}") from None
        text = _decode(data, source, "")
        del data  # a 16 MiB policy should not be held twice while it is composed
        return _load_text(text, source, now, Path(source).parent, progress)


def load_policy_text(
    text: str,
    source: str = "<string>",
    now: datetime | None = None,
    base_dir: Path | None = None,
) -> LoadResult:
    """Validate policy text; ``source`` names it in locations.

    ``prefixes_file`` entries resolve against ``base_dir`` (default: the current
    directory), and are shown in locations as ``base_dir/prefixes_file``. Failures
    are ``PolicyError`` as for ``load_policy``.
    """
    _check_now(now)
    with _load_failures(source):
        return _load_text(text, source, now, base_dir if base_dir is not None else Path("."))


_POLICY_LIMIT = (
    f"the {describe_limit(MAX_POLICY_BYTES)} limit for a policy file"
    " (big pools go in a prefixes_file)"
)


def _check_now(now: datetime | None) -> None:
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")  # a caller bug, not bad input


@contextmanager
def _load_failures(source: str) -> Iterator[None]:
    """Whatever goes wrong while loading ends as one PolicyError naming the file."""
    try:
        yield
    except PolicyError:
        raise
    except MemoryError:
        raise PolicyError(None, "", f"{source}: out of memory while loading the policy") from None
    except RecursionError:
        raise PolicyError(None, "", f"{source}: nested too deeply to load") from None
    except Exception as exc:  # a bug in op25b; still one line, and the reload survives it
        raise PolicyError(
            None,
            "",
            f"{source}: cannot load policy: internal error {type(exc).__name__}: {exc}"
            " (please report this as an op25b bug)",
        ) from None


def _load_text(
    text: str,
    source: str,
    now: datetime | None,
    base_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    if now is None:
        now = datetime.now(UTC)
    root = compose(text, source)
    walker = _Walker(source, base_dir, now, progress)
    # A big pool file creates millions of objects that are never cyclic garbage; left
    # on, the collector rescans all of them over and over (measured ~2x the load time).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return walker.policy(root)
    finally:
        if was_enabled:
            gc.enable()


# ------------------------------------------------------------------- YAML plumbing


def _decode(data: bytes, shown: str, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PolicyError(Location(shown, line, col), path, "not UTF-8 text") from None


# -------------------------------------------------------------------- the walker


class _Walker(NodeReader):
    """Walks one composed document; holds the context every section check needs."""

    def __init__(
        self,
        source: str,
        base_dir: Path,
        now: datetime,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(source)
        self.base_dir = base_dir
        self.now = now
        self.progress = progress
        self.plan_builds: list[PlanBuild] = []
        self.prefix_count = 0  # plan prefixes so far: the next plan's global base index
        self.files_read = [source]  # the policy and its pool files, as shown in errors
        self.pool_bytes = 0  # read from pool files so far (MAX_POOL_BYTES is for all)

    # -- sections ----------------------------------------------------------------

    def policy(self, root: Node) -> LoadResult:
        top = self.mapping(
            root,
            "",
            (
                "version",
                "guarded_ports",
                "action",
                "plans",
                "provider_mtas",
                "exemptions",
                "daemon",
            ),
            required=("version", "guarded_ports", "action", "plans"),
        )
        # version first: a newer format should fail as "unsupported", not as a typo.
        version_node = top["version"][1]
        version = self.integer(version_node, "version", lo=-(2**63))
        if version != SUPPORTED_VERSION:
            self.fail(
                version_node,
                "version",
                f"unsupported policy version {version} (this op25b reads version 1)",
            )
        ports_node = top["guarded_ports"][1]
        ports = self.guarded_ports(ports_node)
        action_node = top["action"][1]
        action = Action(self.choice(action_node, "action", tuple(a.value for a in Action)))
        plans = self.plans(top["plans"][1])
        mtas = self.provider_mtas(top["provider_mtas"][1]) if "provider_mtas" in top else ()
        exemption_nodes = top["exemptions"][1] if "exemptions" in top else None
        exemptions = self.exemptions(exemption_nodes) if exemption_nodes is not None else ()
        daemon = DaemonConfig()
        if "daemon" in top:
            daemon = read_daemon(self, top["daemon"][1], self.files_read)

        check_overlaps(self.plan_builds, exemptions, self.now, self.fail_at, self.warn_at, mtas)

        policy = Policy(
            source=self.source,
            guarded_ports=frozenset(ports),
            action=action,
            plans=plans,
            provider_mtas=mtas,
            exemptions=exemptions,
            daemon=daemon,
            guarded_ports_location=self.loc(ports_node),
            action_location=self.loc(action_node),
        )
        return LoadResult(policy, tuple(self.warnings))

    def guarded_ports(self, node: Node) -> list[int]:
        items = self.sequence(node, "guarded_ports")
        if not items:
            self.fail(node, "guarded_ports", "at least one port is required")
        seen: dict[int, Node] = {}
        for i, item in enumerate(items):
            path = f"guarded_ports[{i}]"
            port = self.integer(item, path, 1, 65535)
            if port in SUBMISSION_PORTS:
                self.fail(
                    item,
                    path,
                    f"port {port} ({SUBMISSION_PORTS[port]}) is never guarded: it is how"
                    " blocked subscribers send mail through their provider, with SMTP AUTH",
                )
            if port in seen:
                self.fail(item, path, f"duplicate port {port} (first at {self.loc(seen[port])})")
            seen[port] = item
        return list(seen)

    def name(self, key_node: Node, path: str, what: str) -> str:
        text = str(key_node.value)
        if not _NAME.fullmatch(text):
            self.fail(
                key_node,
                path,
                f"bad {what} name {text!r}: use 1-32 letters, digits, '-' or '_',"
                " starting with a letter or digit",
            )
        return text

    def plans(self, node: Node) -> tuple[Plan, ...]:
        entries = self.mapping(node, "plans", None)
        if not entries:
            self.fail(node, "plans", "at least one plan is required")
        plans: list[Plan] = []
        for name, (key_node, value_node) in entries.items():
            path = f"plans.{name}"
            self.name(key_node, path, "plan")
            plans.append(self.plan(name, key_node, value_node, path))
        return tuple(plans)

    def plan(self, name: str, key_node: Node, node: Node, path: str) -> Plan:
        keys = self.mapping(node, path, ("exempt", "prefixes", "prefixes_file"), ("exempt",))
        if "prefixes" not in keys and "prefixes_file" not in keys:
            self.fail(node, path, "missing required key 'prefixes' or 'prefixes_file'")
        exempt = self.boolean(keys["exempt"][1], f"{path}.exempt")
        build = PlanBuild(name, exempt, self.loc(key_node), base=self.prefix_count)
        build.files.append(self.source)
        if "prefixes" in keys:
            items_node = keys["prefixes"][1]
            for i, item in enumerate(
                self.sequence(items_node, f"{path}.prefixes", allow_null=True)
            ):
                item_path = f"{path}.prefixes[{i}]"
                prefix = self.prefix(item, item_path)
                mark = item.start_mark
                build.versions.append(prefix.version)
                build.networks.append(prefix.network)
                build.lengths.append(prefix.length)
                build.lines.append(mark.line + 1)
                build.cols.append(mark.column + 1)
                build.add_keys([prefix.version], [prefix.network], [prefix.length])
            build.inline_count = len(build.networks)
            build.file_index.extend(bytes(build.inline_count))
        if "prefixes_file" in keys:
            file_node = keys["prefixes_file"][1]
            self.pool_file(build, file_node, f"{path}.prefixes_file")
            if len(build.networks) == build.inline_count:
                where = f"{build.files[-1]} holds no prefixes"
                self.fail(file_node, f"{path}.prefixes_file", f"plan {name!r} is empty: {where}")
        elif not build.networks:
            self.fail(keys["prefixes"][1], f"{path}.prefixes", f"plan {name!r} has no prefixes")

        self.prefix_count += len(build.networks)
        if self.progress is not None:
            self.progress(self.prefix_count)
        self.plan_builds.append(build)
        plist = PrefixList(
            versions=bytes(build.versions),
            networks=NetworkColumn.of(build.networks),
            lengths=bytes(build.lengths),
            files=tuple(build.files),
            file_index=bytes(build.file_index),
            lines=build.lines,
            cols=build.cols,
        )
        return Plan(name, build.exempt, plist, build.location)

    def prefix(self, node: Node, path: str) -> Prefix:
        text = self.text(node, path, "a prefix")
        try:
            return parse_prefix(text)
        except ValueError as exc:
            self.fail(node, path, str(exc))

    def pool_file(self, build: PlanBuild, node: Node, path: str) -> None:
        """Read a pool file: one prefix per line, '#' comments, blank lines ignored."""
        rel = self.text(node, path, "a file path")
        shown = str(self.base_dir / rel)
        if len(build.files) >= 255:  # file_index is one byte per prefix
            self.fail(node, path, "too many prefix files")
        room = MAX_POOL_BYTES - self.pool_bytes
        limit = f"the {describe_limit(MAX_POOL_BYTES)} limit for pool files"
        if self.pool_bytes:
            limit += f" together ({describe_size(room)} left after the earlier ones)"
        try:
            data = read_regular_file(self.base_dir / rel, room, limit)
        except ReadRefused as exc:
            self.fail(node, path, f"cannot read {shown}: {exc}")
        self.pool_bytes += len(data)
        self.files_read.append(shown)
        pool = None
        try:
            # A byte-order mark (an editor's habit, as in the policy itself, where
            # YAML skips it) is not part of the first prefix.
            text = _decode(data, shown, path).removeprefix("\ufeff")
            del data  # not held twice while parsing
            pool = parse_pool(text, self._pool_progress(build))
        except PoolLineError as exc:
            raise PolicyError(Location(shown, exc.line, exc.col), path, exc.message) from None
        except MemoryError:
            pass  # reported below, once the exception and its half-built lists are gone
        if pool is None:
            self.fail(node, path, f"cannot load {shown}: out of memory while parsing it")
        build.files.append(shown)
        build.versions.extend(pool.versions)
        build.networks.extend(pool.values)
        build.lengths.extend(pool.lengths)
        build.lines.extend(pool.lines)
        build.cols.extend(pool.cols)
        build.file_index.extend(bytes([len(build.files) - 1]) * len(pool.lines))
        build.add_keys(pool.versions, pool.values, pool.lengths)

    def _pool_progress(self, build: PlanBuild) -> Callable[[int], None] | None:
        report = self.progress
        if report is None:
            return None
        before = self.prefix_count + len(build.networks)
        return lambda parsed: report(before + parsed)

    def provider_mtas(self, node: Node) -> tuple[ProviderMta, ...]:
        if is_null(node):
            return ()
        entries = self.mapping(node, "provider_mtas", None)
        seen: dict[tuple[int, int], tuple[Location, str]] = {}
        mtas: list[ProviderMta] = []
        for name, (key_node, value_node) in entries.items():
            path = f"provider_mtas.{name}"
            self.name(key_node, path, "provider MTA")
            keys = self.mapping(value_node, path, ("addresses",), ("addresses",))
            list_node = keys["addresses"][1]
            items = self.sequence(list_node, f"{path}.addresses")
            if not items:
                self.fail(list_node, f"{path}.addresses", "at least one address is required")
            addresses: list[tuple[int, int]] = []
            locations: list[Location] = []
            for i, item in enumerate(items):
                item_path = f"{path}.addresses[{i}]"
                text = self.text(item, item_path, "an IP address")
                if "/" in text:
                    self.fail(
                        item,
                        item_path,
                        f"provider MTA addresses are single IP addresses, not prefixes: {text!r}",
                    )
                try:
                    address = _parse_address(text)
                except ValueError as exc:
                    self.fail(item, item_path, str(exc))
                if address in seen:
                    other_loc, other_path = seen[address]
                    self.fail(
                        item,
                        item_path,
                        f"duplicate address {addr.format_address(*address)}"
                        f" (also {other_path} at {other_loc})",
                    )
                seen[address] = (self.loc(item), item_path)
                addresses.append(address)
                locations.append(self.loc(item))
            mtas.append(ProviderMta(name, tuple(addresses), tuple(locations), self.loc(key_node)))
        return tuple(mtas)

    def exemptions(self, node: Node) -> tuple[Exemption, ...]:
        out: list[Exemption] = []
        for i, item in enumerate(self.sequence(node, "exemptions", allow_null=True)):
            path = f"exemptions[{i}]"
            keys = self.mapping(
                item,
                path,
                ("prefix", "ticket", "expires", "reason"),
                ("prefix", "ticket", "expires"),
            )
            prefix = self.prefix(keys["prefix"][1], f"{path}.prefix")
            ticket = self.text(keys["ticket"][1], f"{path}.ticket", "a ticket reference")
            expires_node = keys["expires"][1]
            expires = self.expires(expires_node, f"{path}.expires")
            reason = self.text(keys["reason"][1], f"{path}.reason") if "reason" in keys else ""
            exemption = Exemption(prefix, ticket, expires, reason, self.loc(item))
            if not exemption.active(self.now):
                self.warn(
                    expires_node,
                    f"{path}.expires",
                    f"exemption for {addr.prefix_text(prefix)} (ticket {ticket}) expired at"
                    f" {_instant(expires)} (expires: {expires_node.value}); it is ignored",
                )
            out.append(exemption)
        return tuple(out)


def _parse_address(text: str) -> tuple[int, int]:
    # inet_pton raises a bare ValueError/UnicodeError for NUL or surrogates; keep the
    # message about the value, not about the codec.
    if not text.isascii() or "\0" in text:
        raise ValueError(f"not an IP address: {text!r}")
    parse_prefix(text)  # the same refusals as a host prefix (too long, IPv4-mapped)
    return addr.parse_address(text)


def _instant(moment: datetime) -> str:
    # Not strftime("%Y"): glibc writes the year 1 as '1', not '0001'.
    return f"{moment.year:04d}-" + moment.strftime("%m-%d %H:%M:%S UTC")
