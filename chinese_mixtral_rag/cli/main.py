"""``cmrag``: the command line. Options come from ``CMR_*`` variables; flags override them.

One module per command (``add_arguments`` + ``run``); this one builds the parser, runs the
command and turns the package's errors into one line on standard error, in the command line's
own words (``--model-path``, not ``model_path=``). A mistyped command, flag or choice is answered
with the closest real one ("did you mean --collection?").
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import Any, NoReturn

from pydantic import ValidationError

from chinese_mixtral_rag import __version__
from chinese_mixtral_rag.cli.flags import (
    SettingsHelpFormatter,
    flags_of_settings,
    refused_settings,
    translate,
)
from chinese_mixtral_rag.errors import ChineseMixtralError

#: Command -> (module under chinese_mixtral_rag.cli, help line).
COMMANDS = {
    "chat": ("chat", "ask the instruct model one question (streamed)"),
    "complete": ("complete", "continue a text with the base model"),
    "ingest": ("ingest", "ingest a folder of documents (also: python -m ingest)"),
    "eval": ("eval", "retrieval recall/MRR or QA exact match/F1 on a dataset (CMRC, LongBench)"),
    "ask": ("ask", "answer a question from a knowledge base, citing its sources"),
    "kb": ("kb", "list, create, rename or delete knowledge bases"),
    "web": ("web", "open the web app (Gradio) on http://127.0.0.1:7860"),
    "serve": ("serve", "serve the OpenAI-compatible QA API on http://127.0.0.1:8000"),
    "download": ("download", "download a Chinese-Mixtral GGUF or checkpoint (HF_ENDPOINT mirrors)"),
    "tiny-model": (
        "tiny_model",
        "write a tiny random-weight Mixtral (GGUF + HF) for trying things out",
    ),
}


#: argparse's "invalid choice" message (commands, and flags with choices such as --mode).
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def _closest(word: str, options: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return found[0] if found else None


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for mistyped flags, commands and choices (Python 3.11's
    argparse has no ``suggest_on_error``), on every level: sub-commands get this class too.

    An unknown flag is reported by the parser of the (sub-)command it was typed after, which
    knows that command's flags (argparse would report it from the top, as ``cmrag``'s)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", SettingsHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        unknown = [e for e in extras if e.startswith("-") and e != "-"]
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.format_usage()}{self.prog}: error: {self.suggest(message)}\n")

    def suggest(self, message: str) -> str:
        """``message`` with the closest flag or choice to what was mistyped, if one is close."""
        choice = _INVALID_CHOICE.search(message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            near = _closest(choice.group(1), options)
            return f"{message}; did you mean {near!r}?" if near else message
        if message.startswith("unrecognized arguments:"):
            flags = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            typed = [w.split("=")[0] for w in message.split(":", 1)[1].split() if w[:2] == "--"]
            nears = [near for w in typed if (near := _closest(w, flags))]
            if nears:
                return f"{message}; did you mean {', '.join(dict.fromkeys(nears))}?"
        return message


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``cmrag`` parser and the parser of each command."""
    parser = Parser(
        prog="cmrag", description="Chinese-Mixtral, locally: chat, completion and document QA."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    subparsers: dict[str, argparse.ArgumentParser] = {}
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
    except ValidationError as exc:
        if exc.title != "Settings":
            raise  # not the user's settings: a bug, with its traceback
        print(f"error: {refused_settings(exc, set(), {})}", file=sys.stderr)  # CMR_* values
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
