"""``cmrag complete``: continue a text with the base model (no chat template)."""

from __future__ import annotations

import argparse

from chinese_mixtral_rag.cli.flags import add_model_flags, settings_from, words_or_stdin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="+", help="the text to continue ('-' reads stdin)")
    add_model_flags(parser)


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.llms import ChineseMixtral

    llm = ChineseMixtral.from_settings(settings_from(args))
    prompt = words_or_stdin(args.prompt)
    print(prompt, end="", flush=True)
    for piece in llm.stream(prompt):
        print(piece, end="", flush=True)
    print()
    return 0
