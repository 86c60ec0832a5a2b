"""Load and compile a policy in a forked child and take the result over: ``load_compiled``.

Why a child: loading a million-prefix policy makes a few hundred MB of short-lived
objects (YAML nodes, pool-file lines, sort keys). In the daemon's own process that
garbage raised the high-water mark to ~380 MB, left the heap fragmented (~200 MB RSS
after reloads) and, in a reload thread, cost verdict gaps whenever a C call over a
million items held the interpreter. In a child all of it dies with the child.

What crosses the pipe is small in objects: a policy and its compiled tables are a few
dozen flat arrays (``PrefixList`` columns, ``PrefixTable`` intervals) plus a few
hundred small objects. The arrays travel as raw bytes after a pickled skeleton that
refers to them by number (pickle's persistent ids), so the parent reads them with
``readinto`` (no interpreter held) and rebuilds each with one copy; the skeleton
unpickles in well under a millisecond. Measured at 1M prefixes: ~60 MB moved in
~0.1 s, the longest single hold a few milliseconds (one array's copy).

Failures keep their wording: a bad policy is the loader's one-line ``PolicyError``
(``file:line:col``), anything else (a killed child, out of memory) a ``PolicyError``
naming the file.
"""

from __future__ import annotations

import io
import pickle
import struct
from array import array
from collections.abc import Callable
from typing import BinaryIO

from op25b.policy.compiled import CompiledPolicy, compile_policy
from op25b.policy.loader import load_policy
from op25b.policy.model import Policy
from op25b.policy.problems import PolicyError
from op25b.util.forked import ChildFailed, run_forked

# Arrays at least this big travel out of band as raw bytes; smaller ones stay in the
# pickle (a few hundred tiny arrays are cheaper inline than as separate reads).
_OUT_OF_BAND = 1 << 16
_COUNT = struct.Struct("<Q")
_ENTRY = struct.Struct("<cQ")  # typecode, bytes
# Each frame starts with a tag: the loader's progress (prefixes parsed so far, for
# systemd's timeout extensions) or a data part.
_PROGRESS = b"P"
_PART = b"D"


_POLICY_REF = "policy"  # the compiled part refers to the policy sent before it


class _Pickler(pickle.Pickler):
    def __init__(self, file: BinaryIO, arrays: list[array[int]], sent: Policy | None) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arrays = arrays
        self.sent = sent

    def persistent_id(self, obj: object) -> int | str | None:
        if obj is self.sent:
            return _POLICY_REF
        if type(obj) is array and len(obj) * obj.itemsize >= _OUT_OF_BAND:
            self.arrays.append(obj)
            return len(self.arrays) - 1
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, arrays: list[array[int]], sent: Policy | None) -> None:
        super().__init__(file)
        self.arrays = arrays
        self.sent = sent

    def persistent_load(self, pid: object) -> object:
        if pid == _POLICY_REF and self.sent is not None:
            return self.sent
        if not isinstance(pid, int) or not 0 <= pid < len(self.arrays):
            raise pickle.UnpicklingError(f"bad reference {pid!r}")
        return self.arrays[pid]


def write_part(out: BinaryIO, obj: object, sent: Policy | None = None) -> None:
    """One part on the wire: array table, pickled skeleton, then each array's raw bytes.

    ``sent`` is an object the reader already has (the policy, for the compiled part).
    """
    arrays: list[array[int]] = []
    skeleton = io.BytesIO()
    _Pickler(skeleton, arrays, sent).dump(obj)
    out.write(_PART)
    out.write(_COUNT.pack(len(arrays)))
    for a in arrays:
        out.write(_ENTRY.pack(a.typecode.encode(), len(a) * a.itemsize))
    out.write(_COUNT.pack(skeleton.tell()))
    out.write(skeleton.getbuffer())
    for a in arrays:
        out.write(memoryview(a).cast("B"))
    out.flush()


def write_progress(out: BinaryIO, prefixes: int) -> None:
    """A progress frame: ``prefixes`` parsed so far."""
    out.write(_PROGRESS + _COUNT.pack(prefixes))
    out.flush()


def read_part(
    pipe: io.BufferedReader,
    sent: Policy | None = None,
    progress: Callable[[int], None] | None = None,
) -> object:
    """Inverse of ``write_part`` (progress frames before it go to ``progress``); every
    read waits without holding the interpreter."""
    while (tag := bytes(_read_exactly(pipe, 1))) == _PROGRESS:
        (done,) = _COUNT.unpack(_read_exactly(pipe, _COUNT.size))
        if progress is not None:
            progress(done)
    if tag != _PART:
        raise pickle.UnpicklingError(f"bad frame {tag!r}")
    (count,) = _COUNT.unpack(_read_exactly(pipe, _COUNT.size))
    table = [_ENTRY.unpack(_read_exactly(pipe, _ENTRY.size)) for _ in range(count)]
    (size,) = _COUNT.unpack(_read_exactly(pipe, _COUNT.size))
    skeleton = _read_exactly(pipe, size)
    arrays: list[array[int]] = []
    for typecode, nbytes in table:
        a = array(typecode.decode())
        a.frombytes(_read_exactly(pipe, nbytes))  # one copy, a few ms at most
        arrays.append(a)
    return _Unpickler(io.BytesIO(skeleton), arrays, sent).load()


def _read_exactly(pipe: io.BufferedReader, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = pipe.readinto(view[got:])
        if not k:
            raise EOFError(f"loader child ended after {got} of {n} bytes")
        got += k
    return buf


class _Reader:
    """The parent's side: the policy, the hook, then the compiled tables."""

    def __init__(
        self,
        on_policy: Callable[[Policy], None] | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.on_policy = on_policy
        self.progress = progress
        self.hook_error: BaseException | None = None

    def __call__(self, pipe: io.BufferedReader) -> tuple[Policy, CompiledPolicy] | None:
        policy = read_part(pipe, progress=self.progress)
        if not isinstance(policy, Policy):
            raise pickle.UnpicklingError("not a policy")
        if self.on_policy is not None:
            try:
                self.on_policy(policy)
            except BaseException as e:  # raised again once the child is collected
                self.hook_error = e
                return None
        compiled = read_part(pipe, policy)
        if not isinstance(compiled, CompiledPolicy):
            raise pickle.UnpicklingError("not a compiled policy")
        return policy, compiled


def load_compiled(
    path: str,
    *,
    background: bool,
    on_policy: Callable[[Policy], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Policy, CompiledPolicy]:
    """Load and compile ``path`` in a forked child; PolicyError as ``load_policy`` words it.

    The child sends the policy as soon as it is loaded, then compiles: ``on_policy``
    runs with it meanwhile (the daemon starts computing and loading the kernel sets,
    which need only the policy, in parallel with the compile). An exception from
    ``on_policy`` is raised here once the child is gone. ``progress`` hears the
    loader's prefix counts as it parses (``load_policy``'s hook, relayed). ``background``
    (reloads) runs the child at a lower CPU priority than the verdict loop.
    """

    def work(out: BinaryIO) -> None:
        policy = load_policy(path, progress=lambda n: write_progress(out, n)).policy
        write_part(out, policy)
        write_part(out, compile_policy(policy), policy)

    reader = _Reader(on_policy, progress)
    try:
        result = run_forked(work, reader, background=background)
    except ChildFailed as e:
        if reader.hook_error is not None:
            raise reader.hook_error from None
        if e.kind == "PolicyError":
            raise PolicyError(None, "", e.message) from None
        why = e.message if e.kind else f"the loader process failed ({e.message})"
        raise PolicyError(None, "", f"{path}: cannot load policy: {why}") from None
    if reader.hook_error is not None:
        raise reader.hook_error
    assert result is not None  # read to the end, or the hook failed (raised above)
    return result
