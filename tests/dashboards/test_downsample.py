from __future__ import annotations

import numpy as np
import pytest

from watchkeeper.dashboards.downsample import minmax_downsample


def test_short_series_are_returned_unchanged() -> None:
    x = np.arange(10, dtype=np.float64)
    y = x * 2
    xs, ys = minmax_downsample(x, y, buckets=5)
    assert xs is x and ys is y


def test_spikes_and_dips_survive_and_order_is_kept() -> None:
    rng = np.random.default_rng(1)
    x = np.arange(100_000, dtype=np.float64)
    y = rng.normal(0, 1, len(x))
    y[31_337] = 50.0
    y[77_777] = -50.0
    xs, ys = minmax_downsample(x, y, buckets=300)
    assert len(xs) <= 4 * 300
    assert ys.max() == 50.0 and ys.min() == -50.0
    assert np.all(np.diff(xs) > 0)
    assert xs[0] == 0 and xs[-1] == 99_999


def test_every_bucket_keeps_its_extremes() -> None:
    x = np.arange(1000, dtype=np.float64)
    y = np.sin(x / 10)
    xs, ys = minmax_downsample(x, y, buckets=50)
    for b in range(50):
        inside = (x >= b * 999 / 50) & (x < (b + 1) * 999 / 50)
        kept = (xs >= b * 999 / 50) & (xs < (b + 1) * 999 / 50)
        assert ys[kept].max() == y[inside].max()
        assert ys[kept].min() == y[inside].min()


def test_gaps_stay_gaps() -> None:
    x = np.arange(10_000, dtype=np.float64)
    y = np.ones_like(x)
    y[4000:6000] = np.nan
    _, ys = minmax_downsample(x, y, buckets=100)
    assert np.isnan(ys).any()
    assert np.nanmax(ys) == 1.0


def test_buckets_must_be_positive() -> None:
    with pytest.raises(ValueError):
        minmax_downsample(np.arange(3.0), np.arange(3.0), buckets=0)
