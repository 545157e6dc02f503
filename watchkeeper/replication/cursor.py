"""Where a replica is in the replication stream, kept in its data dir so it survives a restart.

The file (``replication.json``) holds the replica's id (which entries are its own), the stream key
and the id of the last entry applied. Losing an update only means some entries are applied again,
which stores nothing twice (see `watchkeeper.replication`), so it is written atomically but
without fsync.

>>> stream_id("1700000000000-3") > stream_id("1700000000000-2")
True
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

START = "0-0"
FILE_NAME = "replication.json"


def stream_id(text: str) -> tuple[int, int]:
    """A Redis stream entry id (``ms-seq``) as a comparable pair."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class Cursor:
    path: Path
    replica_id: str
    stream: str
    position: str = START
    """Id of the last entry applied (`START`: none yet)."""

    @classmethod
    def load(cls, data_dir: Path, stream: str) -> Cursor:
        """The saved cursor; a new replica id at the start of the stream when there is none (or
        it was for another stream key)."""
        path = data_dir / FILE_NAME
        try:
            saved = json.loads(path.read_text())
            replica_id, saved_stream, position = saved["replica_id"], saved["stream"], saved["position"]
            stream_id(position)
        except (OSError, ValueError, KeyError, TypeError):
            return cls(path, uuid.uuid4().hex, stream)
        return cls(path, str(replica_id), stream, str(position) if saved_stream == stream else START)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        saved = {"replica_id": self.replica_id, "stream": self.stream, "position": self.position}
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, self.path)
