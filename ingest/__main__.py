"""``python -m ingest docs/``: the same as ``cmrag ingest docs/``."""

if __name__ == "__main__":  # guarded: worker processes re-import the main module
    from chinese_mixtral_rag.ingest_cli import ingest_main

    raise SystemExit(ingest_main())
