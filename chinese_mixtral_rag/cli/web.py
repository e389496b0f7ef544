"""``cmrag web``: the Gradio app on http://127.0.0.1:7860 (local only unless ``--host`` says)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chinese_mixtral_rag.cli.flags import add_model_flags, add_store_flags, settings_from
from chinese_mixtral_rag.errors import ChineseMixtralError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("--auth", help="require a login, given as user:password")
    parser.add_argument("--lang", choices=["zh", "en"], default="zh", help="interface language")
    parser.add_argument(
        "--examples",
        type=Path,
        help="a text or Markdown file whose questions (lines or table cells ending in ？ or ?) "
        "the page offers as chips, e.g. examples/README.md",
    )
    add_store_flags(
        parser.add_argument_group("store (defaults from CMR_* environment variables)"),
        collection="knowledge base shown first (name or id)",
    )
    add_model_flags(parser)


def run(args: argparse.Namespace) -> int:
    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user:
            raise ChineseMixtralError("--auth takes user:password, e.g. --auth alice:s3cret")
        auth = (user, password)
    settings = settings_from(args)
    if args.collection:  # named on purpose: it must exist; shown by its name
        from chinese_mixtral_rag.store import open_knowledge_base

        kb = open_knowledge_base(settings, must_exist=True)
        settings = settings.model_copy(update={"collection": kb.display_name})
    from chinese_mixtral_rag.web import WebApp, launch  # Gradio: seconds to import

    examples: list[str] = []
    if args.examples:
        from chinese_mixtral_rag.web.app import example_questions

        try:
            examples = example_questions(args.examples)
        except (OSError, UnicodeDecodeError) as exc:
            raise ChineseMixtralError(
                f"--examples {args.examples}: cannot read it ({exc}); give a UTF-8 text file."
            ) from exc
    app = WebApp(settings, lang=args.lang, examples=examples)
    app.load_model()
    if app.model_error:  # at start, not at the first question
        raise ChineseMixtralError(app.model_error)
    launch(app, host=args.host, port=args.port, auth=auth)
    return 0
