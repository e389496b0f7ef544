"""``cmrag serve``: the OpenAI-compatible RAG API on http://127.0.0.1:8000 (local unless
``--host`` says), keys from ``--api-key`` and ``CMR_API_KEYS``."""

from __future__ import annotations

import argparse
import os
import sys

from chinese_mixtral_rag.cli.flags import add_model_flags, add_store_flags, settings_from
from chinese_mixtral_rag.errors import MissingDependencyError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=8000, help="port to serve on")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        default=[],
        help="a key clients must send as 'Authorization: Bearer KEY' (repeatable; also "
        "CMR_API_KEYS=k1,k2)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="answers generated at once (unset: 1 for a local model, 4 for a model server)",
    )
    parser.add_argument(
        "--queue-size", type=int, default=16, help="answers waiting for a turn before 429"
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=300.0,
        help="seconds an answer may wait for a turn before 503",
    )
    # Every knowledge base is served (each is a model of the API): no --collection.
    store = parser.add_argument_group("store (defaults from CMR_* variables)")
    add_store_flags(store, collection=None)
    add_model_flags(parser)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from chinese_mixtral_rag.api.app import Service, create_app
        from chinese_mixtral_rag.api.gate import Gate
    except ImportError as exc:
        raise MissingDependencyError("fastapi", "serve", "cmrag serve") from exc

    settings = settings_from(args)
    keys = [*args.api_keys, *filter(None, os.environ.get("CMR_API_KEYS", "").split(","))]
    chat = None
    if settings.model_path or settings.model or settings.openai_base_url:
        from chinese_mixtral_rag.chat_models import ChineseMixtralChat

        chat = ChineseMixtralChat.from_settings(settings)
        chat.get_backend()  # load (or reach the server) now: errors before serving, not later
    remote = settings.resolved_backend() == "openai"
    concurrency = args.concurrency or (4 if remote else 1)
    if not keys and args.host not in LOOPBACK:
        print(
            f"warning: serving on {args.host} without --api-key: anyone who can reach it can "
            "read and change the knowledge bases",
            file=sys.stderr,
        )
    if chat is None:
        print("no model configured: only mode='search' answers", file=sys.stderr)
    gate = Gate(concurrency, args.queue_size, args.queue_timeout)
    app = create_app(Service(settings, chat=chat, api_keys=keys, gate=gate))
    level = "info" if args.verbose else "warning"
    uvicorn.run(app, host=args.host, port=args.port, log_level=level)
    return 0
