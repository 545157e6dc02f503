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


class ConcatSeriesReader(SeriesReader, Protocol):
    """A reader that can also return a selection as one block (``tsdb.Storage`` does)."""

    def select_concat(self, matchers: Sequence[Matcher], start_ms: int,
                      end_ms: int) -> tuple[list[Labels], npt.NDArray[np.int64], npt.NDArray[np.float64],
                                            npt.NDArray[np.int64]]:
        """`select` as ``(labels, timestamps, values, offsets)``: series ``i`` (same order and
        contents as `select`) at ``[offsets[i], offsets[i + 1])`` of the two arrays."""
        ...


def select_concat(reader: SeriesReader, matchers: Sequence[Matcher], start_ms: int,
                  end_ms: int) -> tuple[list[Labels], npt.NDArray[np.int64], npt.NDArray[np.float64],
                                        npt.NDArray[np.int64]]:
    """``reader.select_concat`` when the reader has it (no per-series arrays, no second copy),
    else `select`'s series concatenated; same result either way."""
    method = getattr(reader, "select_concat", None)
    if method is not None:
        out: tuple[list[Labels], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]]
        out = method(matchers, start_ms, end_ms)
        return out
    series = reader.select(matchers, start_ms, end_ms)
    offsets = np.zeros(len(series) + 1, dtype=np.int64)
    np.cumsum([len(s.timestamps_ms) for s in series], out=offsets[1:])
    if not series:
        return [], np.empty(0, np.int64), np.empty(0, np.float64), offsets
    ts = np.concatenate([np.asarray(s.timestamps_ms, np.int64) for s in series])
    vals = np.concatenate([np.asarray(s.values, np.float64) for s in series])
    return [s.labels for s in series], ts, vals, offsets
