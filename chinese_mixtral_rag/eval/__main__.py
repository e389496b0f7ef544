"""``python -m chinese_mixtral_rag.eval ...``: exactly ``cmrag eval ...``."""

import sys

from chinese_mixtral_rag.cli import main

raise SystemExit(main(["eval", *sys.argv[1:]]))
