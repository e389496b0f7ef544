"""``cmrag tiny-model DIR``: write a tiny random-weight Mixtral (GGUF + HF) to try things out."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="where to write it")


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.testing import build_tiny_mixtral

    tiny = build_tiny_mixtral(Path(args.directory))
    print(f"GGUF: {tiny.gguf_path}\nHF:   {tiny.hf_dir}")
    return 0
