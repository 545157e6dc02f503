"""The one exception tree of watchkeeper.

```
WatchkeeperError
  ConfigError
  IngestError -> DecodeError, LimitExceeded
  QueryError  -> ParseError, EvalError, QueryTimeout, TooManySamples
  StorageError
  NotificationError
```

The core raises these; the HTTP layer maps them to status codes and Prometheus-style bodies.
"""

from __future__ import annotations


class WatchkeeperError(Exception):
    """Base of every error watchkeeper raises on purpose."""


class ConfigError(WatchkeeperError):
    """A configuration file or setting is invalid."""


class IngestError(WatchkeeperError):
    """Incoming data was refused. `status` is the HTTP status the API answers with."""

    status = 400


class DecodeError(IngestError):
    """A request body could not be decoded (bad snappy, protobuf, JSON, text)."""


class LimitExceeded(IngestError):
    """A configured limit was hit; `retry_after_seconds` is set when retrying later can succeed."""

    def __init__(self, message: str, *, status: int = 400, retry_after_seconds: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_seconds = retry_after_seconds


class QueryError(WatchkeeperError):
    """A query failed. `error_type` is the Prometheus API `errorType`."""

    error_type = "execution"
    status = 422


class ParseError(QueryError):
    error_type = "bad_data"
    status = 400


class EvalError(QueryError):
    error_type = "execution"
    status = 422


class QueryTimeout(QueryError):
    error_type = "timeout"
    status = 503


class TooManySamples(QueryError):
    error_type = "execution"
    status = 422


class StorageError(WatchkeeperError):
    """The store could not read or write."""


class NotificationError(WatchkeeperError):
    """A notification could not be rendered or delivered."""
