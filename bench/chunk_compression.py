"""Chunk codec figures on the shared benchmark workload: bytes per sample and throughput.

    python bench/chunk_compression.py [--instances 10] [--steps 480] [--chunk 120]

Every series of ``app_series(instances)`` gets ``steps`` samples (15 s apart, 3 decimals), cut
into chunks of ``chunk`` samples. Prints bytes/sample per metric family (the whole blob: header,
checksum and all), then encode and decode throughput in samples/s. Decoding is timed three ways:
``decode_concat`` over all chunks (the query path), ``decode_many`` (the same plus per-chunk
slicing) and ``decode_chunk`` one blob at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from watchkeeper.tsdb.chunks import decode_chunk, decode_concat, decode_many, encode_chunk

sys.path.insert(0, str(Path("/work/shared/bench")))
from workload import app_series, generate

START_MS = 1_700_000_000_000


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, float]:
    """The fastest of `repeats` runs of `fn`: (wall seconds, CPU seconds of this process).

    CPU time is printed too because the box is shared: under load, wall time overstates cost."""
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--steps", type=int, default=480)
    parser.add_argument("--chunk", type=int, default=120)
    args = parser.parse_args()

    series = app_series(args.instances)
    generate(series, START_MS, args.steps)
    chunks: list[tuple[str, np.ndarray, np.ndarray]] = []
    for s in series:
        ts = np.array([t for t, _ in s.samples], dtype=np.int64)
        vals = np.array([v for _, v in s.samples], dtype=np.float64)
        for lo in range(0, ts.size, args.chunk):
            chunks.append((s.labels["__name__"], ts[lo:lo + args.chunk], vals[lo:lo + args.chunk]))
    n_samples = sum(ts.size for _, ts, _ in chunks)

    blobs: list[bytes] = []
    encode_s = best_of(1, lambda: blobs.extend(encode_chunk(ts, vals) for _, ts, vals in chunks))

    size: dict[str, int] = defaultdict(int)
    samples: dict[str, int] = defaultdict(int)
    variants: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for (family, ts, _), blob in zip(chunks, blobs, strict=True):
        size[family] += len(blob)
        samples[family] += ts.size
        variants[family][blob[0] & 15] += 1
    print(f"{len(series)} series, {len(chunks)} chunks of <= {args.chunk} samples, {n_samples} samples")
    print(f"{'family':40} {'series':>7} {'B/sample':>9}  value encodings")
    names = {1: "decimal", 2: "xor", 3: "xor-planes", 8 | 2: "xor+zstd", 8 | 3: "xor-planes+zstd"}
    for family in sorted(size, key=lambda f: -samples[f]):
        enc = ", ".join(f"{names.get(v, v)} {c}" for v, c in sorted(variants[family].items()))
        n_series = samples[family] // args.steps
        print(f"{family:40} {n_series:>7} {size[family] / samples[family]:>9.3f}  {enc}")
    total = sum(size.values())
    print(f"{'ALL':40} {len(series):>7} {total / n_samples:>9.3f}  ({total} bytes)")

    # Check the round trip before timing it.
    ts_all, vals_all, _ = decode_concat(blobs)
    np.testing.assert_array_equal(ts_all, np.concatenate([ts for _, ts, _ in chunks]))
    np.testing.assert_array_equal(vals_all.view(np.uint64),
                                  np.concatenate([v for _, _, v in chunks]).view(np.uint64))

    def in_batches(size: int) -> None:
        for lo in range(0, len(blobs), size):
            decode_concat(blobs[lo:lo + size])

    timings = [
        ("encode_chunk (1 at a time)", encode_s),
        ("decode_concat (all at once)", best_of(5, lambda: decode_concat(blobs))),
        ("decode_concat (batches of 1000)", best_of(3, lambda: in_batches(1000))),
        ("decode_concat (batches of 100)", best_of(3, lambda: in_batches(100))),
        ("decode_many (all at once)", best_of(5, lambda: decode_many(blobs))),
        ("decode_chunk (1 at a time)", best_of(2, lambda: [decode_chunk(b) for b in blobs])),
    ]
    print()
    print(f"{'':32} {'M samples/s':>12} {'(CPU time)':>11} {'us/chunk':>9}")
    for label, (wall, cpu) in timings:
        print(f"{label:32} {n_samples / wall / 1e6:12.2f} {n_samples / cpu / 1e6:11.2f} "
              f"{wall * 1e6 / len(chunks):9.2f}")

if __name__ == "__main__":
    main()
