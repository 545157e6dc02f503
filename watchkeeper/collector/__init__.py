"""Ingest: remote-write (and later OTLP, JSON push, text exposition, scrape), validation and limits."""
