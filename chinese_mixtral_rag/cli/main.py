"""``cmrag``: the command line. Options come from ``CMR_*`` variables; flags override them.

One module per command (``add_arguments`` + ``run``); this one builds the parser, runs the
command and turns the package's errors into one line on standard error, in the command line's
own words (``--model-path``, not ``model_path=``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

from chinese_mixtral_rag import __version__
from chinese_mixtral_rag.cli.flags import flags_of_settings, translate
from chinese_mixtral_rag.errors import ChineseMixtralError

#: Command -> (module under chinese_mixtral_rag.cli, help line).
COMMANDS = {
    "chat": ("chat", "ask the instruct model one question (streamed)"),
    "complete": ("complete", "continue a text with the base model"),
    "ingest": ("ingest", "ingest a folder of documents (also: python -m ingest)"),
    "eval": ("eval", "retrieval recall/MRR or QA exact match/F1 on a dataset (CMRC, LongBench)"),
    "ask": ("ask", "answer a question from a knowledge base, citing its sources"),
    "web": ("web", "open the web app (Gradio) on http://127.0.0.1:7860"),
    "serve": ("serve", "serve the OpenAI-compatible QA API on http://127.0.0.1:8000"),
    "download": ("download", "download a Chinese-Mixtral GGUF or checkpoint (HF_ENDPOINT mirrors)"),
    "tiny-model": (
        "tiny_model",
        "write a tiny random-weight Mixtral (GGUF + HF) for trying things out",
    ),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``cmrag`` parser and the parser of each command."""
    parser = argparse.ArgumentParser(
        prog="cmrag", description="Chinese-Mixtral, locally: chat, completion and document QA."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    subparsers = {}
    for name, (module, help_line) in COMMANDS.items():
        command = import_module(f"chinese_mixtral_rag.cli.{module}")
        subparsers[name] = commands.add_parser(name, help=help_line)
        command.add_arguments(subparsers[name])
    return parser, subparsers


def main(argv: Sequence[str] | None = None) -> int:
    parser, subparsers = build_parser()
    args = parser.parse_args(argv)
    #: Settings field -> this command's flag, for putting core messages in the CLI's words.
    args.settings_flags = flags_of_settings(subparsers[args.command])
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = import_module(f"chinese_mixtral_rag.cli.{COMMANDS[args.command][0]}")
    try:
        return int(command.run(args))
    except ChineseMixtralError as exc:
        print(f"error: {translate(str(exc), args.settings_flags)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "ingest":
            print(
                "interrupted; run the same command again to finish (nothing is lost)",
                file=sys.stderr,
            )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
