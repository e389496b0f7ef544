"""``python -m ingest docs/``: the same as ``cmrag ingest docs/``."""

if __name__ == "__main__":  # guarded: worker processes re-import the main module
    import sys

    from chinese_mixtral_rag.cli import main

    raise SystemExit(main(["ingest", *sys.argv[1:]]))
