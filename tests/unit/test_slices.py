"""op25b.util.slices: the GIL-friendly helpers must behave exactly like the builtins."""

from __future__ import annotations


def test_slices_sort_and_split_like_the_builtins() -> None:
    """The GIL-friendly helpers give exactly what list.sort() and str.split give,
    sliced (another thread is alive) and whole (this thread alone)."""
    import random
    import threading

    from op25b.util.slices import SLICE, lines_in_slices, release, sort_in_slices

    rng = random.Random(5)
    items = [rng.getrandbits(80) for _ in range(SLICE * 3 + 17)]
    expected = sorted(items)
    alone = items[:]
    sort_in_slices(alone)
    assert alone == expected
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert threading.active_count() > 1
        sort_in_slices(items)
        assert items == expected
        release(items)
        assert items == []
    finally:
        stop.set()
        other.join()
    text = "\n".join(f"line{i}" for i in range(50_000)) + "\n"
    pieces = [line for chunk in lines_in_slices(text, size=4096) for line in chunk]
    assert pieces == text.split("\n")


def test_prefix_list_release_frees_everything() -> None:
    from array import array

    from op25b.policy.model import Prefix, PrefixList

    items = [Prefix(4, i << 8, 24) for i in range(70_000)]
    pl = PrefixList.build(
        items,
        ("p.yaml",),
        bytes(len(items)),
        array("I", [1]) * len(items),
        array("I", [1]) * len(items),
    )
    assert len(pl) == 70_000 and pl[5] == items[5]
    pl.release()
    assert len(pl) == 0
