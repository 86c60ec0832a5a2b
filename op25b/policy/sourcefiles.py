"""Reading a policy file or a pool file: regular files only, bounded, never blocking.

Owns how the loader gets bytes off the disk, so `op25b check` and the daemon's reload
can neither hang nor run out of memory on a path that is not what it claims to be:

- Opened with ``O_NONBLOCK``: opening a FIFO for reading otherwise waits for a writer
  forever (a reload thread stuck there ignores every later SIGHUP). Then ``fstat``
  on the open descriptor (no race with a rename) and anything but a regular file --
  FIFO, device (``/dev/zero`` never ends), directory, socket -- is refused before a
  single byte is read.
- Bounded: a file larger than its limit is refused from its size, before reading; a
  file that grows while it is read is cut off at the limit + 1 byte and refused too.

The limits, with what was measured on the development box (2 vCPU):

- ``MAX_POLICY_BYTES`` 16 MiB for the YAML policy: composing YAML costs ~2 s and
  ~40 MB of memory per MB of text, so 16 MiB is already ~30 s and ~700 MB. Large
  pools belong in ``prefixes_file`` (about 100x cheaper per prefix).
- ``MAX_POOL_BYTES`` 256 MiB for one pool file and for all pool files of a policy
  together: 1,000,000 prefixes are ~15 MB of text and ~210 MB of memory while
  loading, so the limit (~17 M prefixes, ~3.5 GB) is far beyond any real address
  plan yet refuses a wrong path (a disk image, a log) before it exhausts memory.

Errors are ``ReadRefused`` with a one-line reason; the loader places it in a
``PolicyError``.
"""

from __future__ import annotations

import os
import stat

MiB = 1 << 20
MAX_POLICY_BYTES = 16 * MiB
MAX_POOL_BYTES = 256 * MiB

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class ReadRefused(Exception):
    """Why a file was not read; ``str()`` is the one-line reason."""


def describe_size(n: int) -> str:
    """``268435457 bytes`` as people read it: ``256.0 MiB (268435457 bytes)``."""
    return f"{n / MiB:.1f} MiB ({n} bytes)" if n >= MiB else f"{n} bytes"


def describe_limit(n: int) -> str:
    """A limit as configured: ``256 MiB``, or ``40 bytes`` when not whole MiB."""
    return f"{n // MiB} MiB" if n and n % MiB == 0 else f"{n} bytes"


def read_regular_file(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    ``what`` names the limit in the refusal ("the 256 MiB limit for a pool file").
    Raises ReadRefused, never blocks on a FIFO and never reads a device.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ReadRefused(exc.strerror or str(exc)) from None
    except ValueError as exc:  # a NUL byte in the path
        raise ReadRefused(str(exc)) from None
    try:
        mode_size = os.fstat(fd)
        if not stat.S_ISREG(mode_size.st_mode):
            kind = next((name for test, name in _KINDS if test(mode_size.st_mode)), "special")
            raise ReadRefused(f"not a regular file (it is {kind})")
        if mode_size.st_size > limit:
            raise ReadRefused(f"{describe_size(mode_size.st_size)} is over {what}")
        return _read_at_most(fd, limit, what)
    except OSError as exc:
        raise ReadRefused(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int, what: str) -> bytes:
    # One read normally returns the whole file; loop for short reads, and read one
    # byte past the limit so a file growing under us is noticed, not cut silently.
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, limit + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise ReadRefused(f"grew past {what} while being read")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
