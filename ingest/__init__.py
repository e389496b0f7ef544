"""``python -m ingest docs/``: the same command as ``cmrag ingest docs/``."""
