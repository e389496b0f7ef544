"""``cmrag``: the command line. Options come from ``CMR_*`` variables; flags override them."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from chinese_mixtral_rag import __version__
from chinese_mixtral_rag.errors import ChineseMixtralError

_MODEL_FLAGS = {
    "model_path": "--model-path",
    "model": "--model",
    "backend": "--backend",
    "n_ctx": "--n-ctx",
    "n_gpu_layers": "--n-gpu-layers",
    "n_threads": "--n-threads",
    "max_tokens": "--max-tokens",
    "temperature": "--temperature",
    "top_p": "--top-p",
    "top_k": "--top-k",
    "repetition_penalty": "--repetition-penalty",
    "seed": "--seed",
}


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (defaults from CMR_* environment variables)")
    group.add_argument("--model-path", help="GGUF file or HF checkpoint dir [CMR_MODEL_PATH]")
    group.add_argument("--model", help="Hugging Face hub id for the transformers backend")
    group.add_argument("--backend", choices=["llama_cpp", "transformers"])
    group.add_argument("--n-ctx", type=int, help="context window (default: model's trained)")
    group.add_argument("--n-gpu-layers", type=int, help="llama.cpp layers on GPU (-1: all)")
    group.add_argument("--n-threads", type=int, help="llama.cpp CPU threads")
    group.add_argument("--max-tokens", type=int, help="new tokens at most (default 512)")
    group.add_argument("--temperature", type=float, help="0 for greedy (default 0.2)")
    group.add_argument("--top-p", type=float)
    group.add_argument("--top-k", type=int)
    group.add_argument("--repetition-penalty", type=float)
    group.add_argument("--seed", type=int)
    group.add_argument("--stop", action="append", help="stop string (repeatable)")
    group.add_argument("-v", "--verbose", action="store_true", help="log loading details")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmrag", description="Chinese-Mixtral, locally: chat, completion and document QA."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    chat = commands.add_parser("chat", help="ask the instruct model one question (streamed)")
    chat.add_argument("question", nargs="+", help="the question ('-' reads standard input)")
    chat.add_argument("--system", help="system prompt (folded into the first user turn)")
    chat.add_argument("--show-prompt", action="store_true", help="print the rendered prompt")
    _add_model_flags(chat)

    complete = commands.add_parser("complete", help="continue a text with the base model")
    complete.add_argument("prompt", nargs="+", help="the text to continue ('-' reads stdin)")
    _add_model_flags(complete)

    from chinese_mixtral_rag.ingest_cli import add_ingest_arguments

    ingest = commands.add_parser(
        "ingest", help="ingest a folder of documents (also: python -m ingest)"
    )
    add_ingest_arguments(ingest)

    from chinese_mixtral_rag.eval import add_eval_arguments

    evaluate = commands.add_parser(
        "eval", help="retrieval recall/MRR or QA exact match/F1 on a dataset (CMRC, LongBench)"
    )
    add_eval_arguments(evaluate)

    from chinese_mixtral_rag.ask_cli import add_ask_arguments

    ask = commands.add_parser(
        "ask", help="answer a question from a knowledge base, citing its sources"
    )
    add_ask_arguments(ask)
    _add_model_flags(ask)

    web = commands.add_parser("web", help="open the web app (Gradio) on http://127.0.0.1:7860")
    web.add_argument("--host", default="127.0.0.1", help="address to serve on")
    web.add_argument("--port", type=int, default=7860)
    web.add_argument("--auth", help="require a login, given as user:password")
    web.add_argument("--collection", help="knowledge base shown first [CMR_COLLECTION]")
    web.add_argument("--lang", choices=["zh", "en"], default="zh", help="interface language")
    _add_model_flags(web)

    tiny = commands.add_parser(
        "tiny-model", help="write a tiny random-weight Mixtral (GGUF + HF) for trying things out"
    )
    tiny.add_argument("directory", help="where to write it")
    return parser


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options = {name: getattr(args, name) for name in _MODEL_FLAGS}
    options = {k: v for k, v in options.items() if v is not None}
    if args.stop:
        options["stop"] = args.stop
    return options


def _text(words: list[str]) -> str:
    return sys.stdin.read() if words == ["-"] else " ".join(words)


def _run(args: argparse.Namespace) -> int:
    if args.command == "tiny-model":
        from pathlib import Path

        from chinese_mixtral_rag.testing import build_tiny_mixtral

        tiny = build_tiny_mixtral(Path(args.directory))
        print(f"GGUF: {tiny.gguf_path}\nHF:   {tiny.hf_dir}")
        return 0
    if args.command == "ingest":
        from chinese_mixtral_rag.ingest_cli import run_ingest

        return run_ingest(args)
    if args.command == "eval":
        from chinese_mixtral_rag.eval import run_eval

        return run_eval(args)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "web":
        return _web(args)
    if args.command == "ask":
        from chinese_mixtral_rag.ask_cli import run_ask

        return run_ask(args, _options(args), _text(args.question))
    if args.command == "chat":
        from chinese_mixtral_rag.chat_models import ChineseMixtralChat

        chat = ChineseMixtralChat(**_options(args))
        messages = [("system", args.system)] if args.system else []
        messages.append(("human", _text(args.question)))
        if args.show_prompt:
            from langchain_core.messages import convert_to_messages

            print(chat.render(convert_to_messages(messages)), file=sys.stderr)
        for chunk in chat.stream(messages):
            print(chunk.text, end="", flush=True)
        print()
        return 0
    from chinese_mixtral_rag.llms import ChineseMixtral

    llm = ChineseMixtral(**_options(args))
    prompt = _text(args.prompt)
    print(prompt, end="", flush=True)
    for piece in llm.stream(prompt):
        print(piece, end="", flush=True)
    print()
    return 0


def _web(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.settings import Settings
    from chinese_mixtral_rag.webui import WebApp, launch

    overrides = _options(args)
    if args.collection:
        overrides["collection"] = args.collection
    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user:
            raise ChineseMixtralError("--auth takes user:password, e.g. --auth alice:s3cret")
        auth = (user, password)
    launch(WebApp(Settings(**overrides), lang=args.lang), host=args.host, port=args.port, auth=auth)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ChineseMixtralError as exc:
        print(f"error: {exc}", file=sys.stderr)
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
