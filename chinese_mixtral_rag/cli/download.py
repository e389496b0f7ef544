"""``cmrag download``: fetch a Chinese-Mixtral model from the Hugging Face Hub (or a mirror set
with ``HF_ENDPOINT``), resuming and verifying it, and print the ``CMR_MODEL_PATH`` to use.

Standard output is that one ``export`` line, so ``eval "$(cmrag download)"`` works; progress bars
and the summary go to standard error.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from chinese_mixtral_rag.backends.download import DEFAULT_QUANT, KNOWN_QUANTS
from chinese_mixtral_rag.cli.flags import translate
from chinese_mixtral_rag.errors import DownloadError

#: Keyword names in the core's messages -> this command's flags.
KEYWORD_FLAGS = {
    "quant": "--quant",
    "filename": "--file",
    "repo_id": "--repo",
    "revision": "--revision",
    "local_dir": "--dir",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--quant",
        metavar="QUANT",
        help=f"GGUF quantisation (unset: {DEFAULT_QUANT}); hfl has {', '.join(KNOWN_QUANTS)}",
    )
    what.add_argument("--file", help="this file of the repository instead of one picked by quant")
    what.add_argument(
        "--hf", action="store_true", help="the full HF checkpoint for transformers (~87 GB)"
    )
    parser.add_argument("--base", action="store_true", help="the base model instead of instruct")
    parser.add_argument("--repo", help="another hub repository (default: hfl's)")
    parser.add_argument("--revision", default="main", help="branch, tag or commit")
    parser.add_argument("--dir", type=Path, help="where models go [<data dir>/models]")


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.backends import download
    from chinese_mixtral_rag.settings import default_data_dir

    local_dir = args.dir or default_data_dir() / "models"
    try:
        if args.hf:
            result = download.download_checkpoint(
                args.repo or download.checkpoint_repo(base=args.base),
                local_dir=local_dir,
                revision=args.revision,
            )
        else:
            result = download.download_gguf(
                args.repo or download.gguf_repo(base=args.base),
                local_dir=local_dir,
                quant=args.quant or DEFAULT_QUANT,
                filename=args.file,
                revision=args.revision,
            )
    except DownloadError as exc:
        raise DownloadError(translate(str(exc), KEYWORD_FLAGS)) from exc
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if result.offline:
        how = "the copy kept here, not compared with the hub"
    else:
        how = f"fetched {_size(result.fetched)}" if result.fetched else "already here"
    print(
        f"{result.repo_id}: {result.path.name}, {_size(result.size)} ({how}); "
        f"checked: {', '.join(result.checks)}",
        file=sys.stderr,
    )
    if args.base:
        print("base model: continue texts with `cmrag complete`", file=sys.stderr)
    print(f"export CMR_MODEL_PATH={shlex.quote(str(result.path))}")
    return 0


def _size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
