"""The command line, a face: the only code besides the web app that prints. It may import every
wing; no wing imports it (``__main__`` entry points aside).

``main.py`` builds the ``cmrag`` parser from one module per command; ``flags.py`` holds the flag
groups the commands share and the one flag -> settings rule; ``console.py`` draws progress bars
and tables. Commands build their model with ``from_settings`` and their knowledge base with
``open_knowledge_base``, exactly as the web app does.
"""

from chinese_mixtral_rag.cli.main import main

__all__ = ["main"]
