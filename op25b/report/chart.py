"""The ``op25b report --chart`` PNG: blocked attempts over time, one line per source.

This is the only module that imports matplotlib, and it does so only inside
``load_renderer`` so that ``op25b`` works (and starts fast) without it. It draws
what ``op25b.report.desk.chart_data`` computed and nothing more: no reading, no scoring.
It uses the Agg canvas on a ``Figure`` directly instead of ``pyplot``, so no global
backend or figure state is touched (safe inside tests and other programs).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING

from op25b.errors import EnvironmentFailure

if TYPE_CHECKING:
    from op25b.report.desk import ChartData

WIDTH_PX = 1200
HEIGHT_PX = 600
DPI = 100
# Above this ratio between the biggest and smallest line, a linear axis flattens the
# small ones (a misconfigured client next to a bot) into the x-axis.
LOG_SCALE_RATIO = 50

Renderer = Callable[["ChartData", str], None]


class ChartUnavailable(EnvironmentFailure):
    """matplotlib is not installed (or broken); the message says how to fix it."""


def load_renderer() -> Renderer:
    """Import matplotlib now and return the drawing function; ChartUnavailable if not."""
    try:
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ChartUnavailable(
            f"--chart needs matplotlib ({e}); install it with: pip install 'op25b[report]'"
        ) from None

    def render(data: ChartData, path: str) -> None:
        """Write ``data`` as a WIDTH_PX x HEIGHT_PX PNG to ``path``."""
        fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        # datetime64 from epoch ms: exact, and UTC by construction (no local zone).
        x = np.array(data.starts, dtype="datetime64[ms]")
        # Markers make single-bucket spikes visible; on dense axes they are clutter.
        marker = "o" if len(x) <= 60 else None
        for label, counts in data.series:
            ax.plot(x, counts, label=label, marker=marker, markersize=3, linewidth=1.5)
        peaks = [max(c) for _, c in data.series if max(c) > 0]
        if peaks and max(peaks) / min(peaks) > LOG_SCALE_RATIO:
            ax.set_yscale("symlog", linthresh=1)  # symlog: zero buckets stay drawable
            ax.set_ylabel("blocked attempts per bucket (log scale)")
        else:
            ax.set_ylabel("blocked attempts per bucket")
            ax.set_ylim(bottom=0)
        if data.starts:
            # matplotlib ships these two without annotations; the calls are as documented.
            locator = AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
            ax.xaxis.set_major_locator(locator)
            formatter = ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
            ax.xaxis.set_major_formatter(formatter)
            if len(x) == 1:
                # One bucket: matplotlib would span years around the lone point; show
                # the bucket with one bucket's margin either side instead.
                pad = np.timedelta64(max(data.bucket_ms, 1000), "ms")
                ax.set_xlim(x[0] - pad, x[0] + 2 * pad)
            # Outside the axes: inside, it hides the first windows, which are often the bot's.
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        else:
            ax.text(0.5, 0.5, "no blocked attempts", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
        ax.set_xlabel("time (UTC)")
        ax.set_title(data.title, fontsize="medium")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        # No bbox_inches="tight": it would change the pixel size we promise.
        fig.savefig(path, format="png", dpi=DPI)

    return render
