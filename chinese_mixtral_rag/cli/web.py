"""``cmrag web``: the Gradio app on http://127.0.0.1:7860 (local only unless ``--host`` says)."""

from __future__ import annotations

import argparse

from chinese_mixtral_rag.cli.flags import add_model_flags, settings_from
from chinese_mixtral_rag.errors import ChineseMixtralError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", help="require a login, given as user:password")
    parser.add_argument("--collection", help="knowledge base shown first [CMR_COLLECTION]")
    parser.add_argument("--lang", choices=["zh", "en"], default="zh", help="interface language")
    add_model_flags(parser)


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.web import WebApp, launch

    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user:
            raise ChineseMixtralError("--auth takes user:password, e.g. --auth alice:s3cret")
        auth = (user, password)
    app = WebApp(settings_from(args), lang=args.lang)
    app.load_model()
    if app.model_error:  # at start, not at the first question
        raise ChineseMixtralError(app.model_error)
    launch(app, host=args.host, port=args.port, auth=auth)
    return 0
