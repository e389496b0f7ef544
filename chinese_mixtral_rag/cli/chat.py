"""``cmrag chat``: one question to the instruct model, the answer streamed."""

from __future__ import annotations

import argparse
import sys

from chinese_mixtral_rag.cli.flags import add_model_flags, settings_from, words_or_stdin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", nargs="+", help="the question ('-' reads standard input)")
    parser.add_argument("--system", help="system prompt (folded into the first user turn)")
    parser.add_argument("--show-prompt", action="store_true", help="print the rendered prompt")
    add_model_flags(parser)


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.chat_models import ChineseMixtralChat

    chat = ChineseMixtralChat.from_settings(settings_from(args))
    messages = [("system", args.system)] if args.system else []
    messages.append(("human", words_or_stdin(args.question)))
    if args.show_prompt:
        from langchain_core.messages import convert_to_messages

        print(chat.render(convert_to_messages(messages)), file=sys.stderr)
    for chunk in chat.stream(messages):
        print(chunk.text, end="", flush=True)
    print()
    return 0
