"""From files to chunks: loaders by extension (with encoding detection and cleaning) and the
Chinese-aware, token-counted splitter. No heavy import at package import time."""
