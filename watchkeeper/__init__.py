"""watchkeeper: a Prometheus-compatible monitoring platform in one process."""

__version__ = "0.1.0"
