"""Host metrics from ``/proc``, named as node_exporter names them (dashboards carry over).

The parsers are pure functions of the file text; :class:`HostCollector` reads the files at scrape
time. Process metrics (CPU, memory, open fds of this or another pid) come from prometheus-client's
``ProcessCollector``, which reads ``/proc/<pid>`` the same way.

```python
registry = CollectorRegistry()
registry.register(HostCollector())
```
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
MEMINFO_FIELDS = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal", "SwapFree")
SECTOR_BYTES = 512
_SKIP_DISKS = ("loop", "ram", "zram", "fd", "sr")


def parse_cpu(stat_text: str, ticks_per_second: float) -> dict[str, float]:
    """Seconds per CPU mode, summed over CPUs, from ``/proc/stat``."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            return {mode: values[i] / ticks_per_second for i, mode in enumerate(CPU_MODES) if i < len(values)}
    return {}


def parse_meminfo(text: str) -> dict[str, float]:
    """Selected ``/proc/meminfo`` fields in bytes."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in MEMINFO_FIELDS:
            parts = rest.split()
            out[name] = float(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def parse_loadavg(text: str) -> tuple[float, float, float]:
    one, five, fifteen = (float(v) for v in text.split()[:3])
    return one, five, fifteen


def parse_net_dev(text: str) -> dict[str, dict[str, float]]:
    """Per interface: receive/transmit bytes, packets, errors, drops from ``/proc/net/dev``."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines()[2:]:
        device, _, rest = line.partition(":")
        fields = [float(v) for v in rest.split()]
        if len(fields) < 12:
            continue
        out[device.strip()] = {
            "receive_bytes": fields[0], "receive_packets": fields[1], "receive_errs": fields[2],
            "receive_drop": fields[3], "transmit_bytes": fields[8], "transmit_packets": fields[9],
            "transmit_errs": fields[10], "transmit_drop": fields[11],
        }  # fmt: skip
    return out


def parse_diskstats(text: str) -> dict[str, dict[str, float]]:
    """Per block device (loop/ram devices skipped): reads, writes, bytes and busy seconds."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 14 or parts[2].startswith(_SKIP_DISKS):
            continue
        f = [float(v) for v in parts[3:14]]
        out[parts[2]] = {
            "reads_completed": f[0], "read_bytes": f[2] * SECTOR_BYTES, "read_time_seconds": f[3] / 1000,
            "writes_completed": f[4], "written_bytes": f[6] * SECTOR_BYTES, "write_time_seconds": f[7] / 1000,
            "io_time_seconds": f[9] / 1000,
        }  # fmt: skip
    return out


def parse_file_nr(text: str) -> tuple[float, float]:
    """(allocated, maximum) file handles from ``/proc/sys/fs/file-nr``."""
    allocated, _unused, maximum = (float(v) for v in text.split()[:3])
    return allocated, maximum


class HostCollector:
    """A prometheus-client collector of host CPU, memory, load, network, disk and fd metrics."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._ticks = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0

    def _read(self, relative: str) -> str | None:
        try:
            with open(os.path.join(self.proc_root, relative)) as f:
                return f.read()
        except OSError:
            return None

    def collect(self) -> Iterator[Metric]:
        text = self._read("stat")
        if text is not None:
            cpu = CounterMetricFamily("node_cpu_seconds", "CPU time by mode, all CPUs.", labels=["mode"])
            for mode, seconds in parse_cpu(text, self._ticks).items():
                cpu.add_metric([mode], seconds)
            yield cpu
        text = self._read("meminfo")
        if text is not None:
            for name, value in parse_meminfo(text).items():
                yield GaugeMetricFamily(
                    f"node_memory_{name}_bytes", f"{name} from /proc/meminfo.", value=value
                )
        text = self._read("loadavg")
        if text is not None:
            for minutes, value in zip((1, 5, 15), parse_loadavg(text), strict=True):
                yield GaugeMetricFamily(f"node_load{minutes}", f"{minutes}-minute load average.", value=value)
        text = self._read("net/dev")
        if text is not None:
            yield from _per_device("node_network", parse_net_dev(text), "Network interface {}.")
        text = self._read("diskstats")
        if text is not None:
            yield from _per_device("node_disk", parse_diskstats(text), "Block device {}.")
        text = self._read("sys/fs/file-nr")
        if text is not None:
            allocated, maximum = parse_file_nr(text)
            yield GaugeMetricFamily("node_filefd_allocated", "Allocated file descriptors.", value=allocated)
            yield GaugeMetricFamily("node_filefd_maximum", "Maximum file descriptors.", value=maximum)


def _per_device(prefix: str, table: dict[str, dict[str, float]], help_format: str) -> Iterator[Metric]:
    fields: dict[str, CounterMetricFamily] = {}
    for device, values in sorted(table.items()):
        for field, value in values.items():
            family = fields.get(field)
            if family is None:
                family = CounterMetricFamily(
                    f"{prefix}_{field}", help_format.format(field.replace("_", " ")), labels=["device"]
                )
                fields[field] = family
            family.add_metric([device], value)
    yield from fields.values()
