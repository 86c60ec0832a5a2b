"""The per-packet path, pure: raw bytes in, a verdict, counts and abuse records out.

``packet`` (bounds-checked parser), ``enforcer`` (parse + decide + count + aggregate,
called once per queued packet), ``counters`` (tallies), ``aggregator`` (blocked
sources per window) and ``verdicts`` (the integers the queue binding understands).
No sockets, no files, no clock reads of its own: the daemon passes ``now`` in.
Depends only on ``op25b.policy`` (and ``op25b.util``).
"""
