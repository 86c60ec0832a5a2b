"""Running the firewall tools (iptables, ip6tables, ipset) and their one error type.

Argument lists, never a shell; every call has a timeout, because a hung tool (a held
xtables lock, a wedged netlink socket) must fail the operation, not the daemon.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from op25b.errors import EnvironmentFailure

# Long enough for a million-entry ``ipset restore`` on a slow router (measured ~4 s
# here), short enough that a wedged tool cannot hold a reload for good.
DEFAULT_TIMEOUT = 120.0


class RulesError(EnvironmentFailure):
    """A firewall command (iptables/ip6tables/ipset) failed; carries its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(self.argv)} failed (exit {returncode}): {self.stderr}")


def run_command(
    args: Sequence[str],
    cmd_prefix: Sequence[str] = (),
    input_text: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Run ``cmd_prefix + args`` (argument list, no shell); stdout, or RulesError."""
    argv = [*cmd_prefix, *args]
    try:
        proc = subprocess.run(
            argv, input=input_text, capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise RulesError(argv, -1, f"timed out after {timeout:g} s") from None
    except OSError as exc:  # missing binary, permission: same error type for callers
        raise RulesError(argv, -1, str(exc)) from None
    if proc.returncode != 0:
        raise RulesError(argv, proc.returncode, proc.stderr)
    return proc.stdout
