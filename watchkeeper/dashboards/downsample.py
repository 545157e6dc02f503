"""Min/max-preserving downsampling of a series to a panel's pixel width.

The x range is cut into ``buckets`` equal slices; each slice keeps its first and last point and
its minimum and maximum, in time order. Spikes survive (a one-sample error burst still reaches
the top of the chart) and the shape of the line is kept at the resolution the screen can show.
NaN values (gaps) are kept where they fall so Plotly still breaks the line.

>>> import numpy as np
>>> x = np.arange(1000, dtype=np.float64); y = np.zeros(1000); y[500] = 9
>>> xs, ys = minmax_downsample(x, y, buckets=10)
>>> len(xs) <= 40, float(ys.max())
(True, 9.0)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def minmax_downsample(x: F64, y: F64, buckets: int) -> tuple[F64, F64]:
    """At most ``4 * buckets`` points of ``(x, y)`` (``x`` sorted ascending) keeping each bucket's
    first, last, min and max. Inputs no longer than that are returned unchanged."""
    n = len(x)
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    if n <= 4 * buckets:
        return x, y
    edges = np.linspace(x[0], x[-1], buckets + 1)
    bucket = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, buckets - 1)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], n] - 1
    # min/max per bucket ignoring NaN: replace NaN by +/-inf for the reductions
    finite = ~np.isnan(y)
    lo_vals = np.where(finite, y, np.inf)
    hi_vals = np.where(finite, y, -np.inf)
    keep = np.zeros(n, dtype=np.bool_)
    keep[starts] = True
    keep[ends] = True
    for s, e in zip(starts, ends, strict=True):
        seg_lo = lo_vals[s : e + 1]
        seg_hi = hi_vals[s : e + 1]
        keep[s + int(np.argmin(seg_lo))] = True
        keep[s + int(np.argmax(seg_hi))] = True
    # gaps: keep the first NaN of every run of NaNs so lines break there
    nan_starts = np.flatnonzero(~finite & np.r_[True, finite[:-1]])
    keep[nan_starts] = True
    return x[keep], y[keep]
