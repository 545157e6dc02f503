"""The values the evaluator passes between nodes, vectorised over all evaluation steps.

An instant query is a range query with one step. Every instant-vector expression evaluates to a
``StepVector``: one row per series, one column per step, with a presence mask (NaN is a value, so
absence needs its own mask). A range vector (matrix selector or subquery) is a ``RangeVector``:
the samples of all series concatenated, with per-series offsets and, for every (series, step),
the index window of samples inside that step's range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from watchkeeper.labels import Labels

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclass(slots=True)
class EvalContext:
    """The steps being evaluated. ``times_ms`` has shape (steps,)."""

    start_ms: int
    end_ms: int
    step_ms: int
    times_ms: I64
    lookback_ms: int = 300_000
    #: Annotations collected during evaluation (Prometheus' warnings and infos, e.g.
    #: ``PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket``).
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    #: The query text (set by the engine), for the ``(line:col)`` that ends Prometheus' annotations;
    #: when the engine was given an AST instead, ``query_expr`` is printed on first use.
    query: str = ""
    query_expr: object = None

    @property
    def steps(self) -> int:
        return int(self.times_ms.shape[0])

    def position(self, expr: object) -> str:
        """`` (line:col)`` of ``expr`` in the query, as Prometheus appends it to annotations
        (``PromQL warning: ... got NaN (1:25)``), or ``""`` when it cannot be found.

        Our AST carries no positions, so this locates the expression's printed form in the
        query text (first occurrence): exact for literals and most sub-expressions as written.
        """
        from watchkeeper.promql.printer import to_promql

        try:
            if not self.query and self.query_expr is not None:
                self.query = to_promql(self.query_expr)  # type: ignore[arg-type]
            text = to_promql(expr)  # type: ignore[arg-type]
        except Exception:  # an expression the printer cannot render: no position
            return ""
        index = self.query.find(text) if text else -1
        if index < 0:
            return ""
        line = self.query.count("\n", 0, index) + 1
        column = index - (self.query.rfind("\n", 0, index) + 1) + 1
        return f" ({line}:{column})"


@dataclass(slots=True)
class Scalar:
    """A scalar per step, shape (steps,)."""

    values: F64


@dataclass(slots=True)
class StringValue:
    value: str


@dataclass(slots=True)
class StepVector:
    """An instant vector at every step.

    ``values`` and ``present`` have shape (series, steps). ``sample_ts`` (same shape) is set only
    straight out of a vector selector (``timestamp()`` needs it). ``drop_name[i]`` marks a series
    whose metric name is to be removed when the result leaves the engine (Prometheus 3's delayed
    ``__name__`` removal); until then the name stays so that later label operations can see it.
    ``drop_name`` None means no series is marked.

    Never read ``values`` without ``present``: the engine writes NaN to absent cells, but a NaN
    there is not a sample. Labels may repeat across rows (``a or a``, ``label_replace``) as long as
    at most one of those rows is present at any step; the engine merges such rows at the end and
    raises ``vector cannot contain metrics with the same labelset`` when they overlap.
    """

    labels: list[Labels]
    values: F64
    present: Bool
    sample_ts: I64 | None = None
    drop_name: Bool | None = None

    @classmethod
    def empty(cls, steps: int) -> StepVector:
        return cls([], np.empty((0, steps)), np.zeros((0, steps), dtype=bool))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(slots=True)
class RangeVector:
    """Samples of several series for a window ending at each step.

    ``timestamps_ms``/``values`` concatenate all series (staleness markers removed), series ``i``
    owning ``[offsets[i], offsets[i+1])``. For step ``j`` the window of series ``i`` is the index
    range ``[lo[i, j], hi[i, j])`` (absolute indices into the concatenated arrays), holding the
    samples with ``window_end_ms[j] - range_ms < t <= window_end_ms[j]`` (left-open).
    ``window_end_ms`` already has offset and ``@`` applied; ``range_ms`` is the selector's range.
    """

    labels: list[Labels]
    timestamps_ms: I64
    values: F64
    offsets: I64
    lo: I64
    hi: I64
    window_end_ms: I64
    range_ms: int
    drop_name: Bool | None = None

    def __len__(self) -> int:
        return len(self.labels)


Value = Scalar | StringValue | StepVector | RangeVector


@dataclass(frozen=True, slots=True)
class ResultSeries:
    """One series of a query result: its points (one point for an instant vector)."""

    labels: Labels
    timestamps_ms: I64
    values: F64


@dataclass(slots=True)
class QueryResult:
    """What ``Engine.instant`` / ``Engine.range`` return; the HTTP API formats it as Prometheus does.

    ``result_type`` is Prometheus' ``resultType``: ``vector`` (instant query over a vector),
    ``matrix`` (range query, or instant query of a range vector), ``scalar`` or ``string``.
    For ``scalar``/``string`` there is one pseudo-series with no labels (string in ``string_value``).
    """

    result_type: Literal["vector", "matrix", "scalar", "string"]
    series: list[ResultSeries]
    string_value: str | None = None
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    samples_loaded: int = 0
