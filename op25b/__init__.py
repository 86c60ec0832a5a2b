"""op25b: an Outbound Port 25 Blocking policy engine for ISP edge routers.

The package is split by concern: ``model`` (the typed policy), ``loader`` (YAML in),
``matcher`` (compiled longest-prefix tables), ``packet`` (raw-bytes parser),
``decide`` (the pure verdict core), and the edges that touch the kernel, files and
sockets (queue binding, rules, logs, lab). Importing it chooses the implementation of
the per-packet path, compiled or pure Python (``op25b.native``).
"""

from op25b import native

__version__ = "0.1.0"

native.install()
