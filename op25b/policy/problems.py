"""How a policy problem is told: ``PolicyError`` and ``PolicyWarning``, with their place.

Both read ``file:line:col: key.path: message`` (1-based, as editors count), the way
ExaBGP reports configuration errors. Shared by the YAML node reader, the loader and
the overlap analysis, none of which needs the others to say where something is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from op25b.errors import InputError
from op25b.policy.model import Location


def _format(location: Location | None, path: str, message: str) -> str:
    parts = [str(location)] if location is not None else []
    if path:
        parts.append(path)
    parts.append(message)
    return ": ".join(parts)


class PolicyError(InputError):
    """A policy that cannot be used; ``str()`` is ``file:line:col: key.path: message``."""

    def __init__(self, location: Location | None, path: str, message: str) -> None:
        super().__init__(location, path, message)
        self.location = location
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return _format(self.location, self.path, self.message)


@dataclass(frozen=True)
class PolicyWarning:
    """Something legal but probably unintended; same text format as ``PolicyError``."""

    location: Location
    path: str
    message: str

    def __str__(self) -> str:
        return _format(self.location, self.path, self.message)
