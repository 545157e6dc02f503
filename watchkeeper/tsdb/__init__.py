"""The time-series store: series index, head, chunk encoding, WAL, SQL persistence, retention."""
