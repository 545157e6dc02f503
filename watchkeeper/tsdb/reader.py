"""What the query engine reads from a store: series with their samples as NumPy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from watchkeeper.labels import Labels, Matcher

#: Prometheus' staleness marker: a signalling NaN with this exact bit pattern.
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


def is_stale(values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Element-wise: is this value the staleness marker (bit-exact, not just any NaN)?"""
    stale: npt.NDArray[np.bool_] = values.view(np.uint64) == np.uint64(STALE_NAN_BITS)
    return stale


@dataclass(frozen=True, slots=True)
class SeriesData:
    """One series and its samples in ``[start_ms, end_ms]``, timestamps strictly increasing."""

    labels: Labels
    timestamps_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


class SeriesReader(Protocol):
    """Read access the PromQL engine needs. Implemented by ``tsdb.Storage`` (and test stores)."""

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        """Series matching all matchers with at least one sample in the closed interval
        ``[start_ms, end_ms]``, each with only its samples inside it (staleness markers included)."""
        ...

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]: ...

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int,
                     end_ms: int) -> list[str]: ...
