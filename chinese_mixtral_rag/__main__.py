"""``python -m chinese_mixtral_rag ...``: the same as ``cmrag ...``."""

from chinese_mixtral_rag.cli import main

raise SystemExit(main())
