"""``cmrag kb list|create|rename|delete``: the knowledge bases of a store, by any name.

A name may be any text, Chinese included (``cmrag kb create "2024年 合同"``); the store keeps a
safe id beside it (:mod:`chinese_mixtral_rag.store.registry`), and every ``--collection`` takes
either. ``delete`` asks first unless ``--yes``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from chinese_mixtral_rag.cli.flags import add_embedding_flags, add_store_flags, settings_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The four sub-commands, each with the store flags (where the knowledge bases live)."""
    actions = parser.add_subparsers(dest="kb_command", required=True)
    listing = actions.add_parser("list", help="the knowledge bases with their files and chunks")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    create = actions.add_parser("create", help="make an empty knowledge base")
    create.add_argument("name", help="any name, e.g. '2024年 合同'")
    rename = actions.add_parser("rename", help="change a knowledge base's name (its id stays)")
    rename.add_argument("name", help="its name or id")
    rename.add_argument("new_name", help="the new name")
    delete = actions.add_parser("delete", help="delete a knowledge base and its uploaded files")
    delete.add_argument("name", help="its name or id")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    for sub in (listing, create, rename, delete):
        group = sub.add_argument_group("store (defaults from CMR_* environment variables)")
        add_store_flags(group, collection=None)
    embedder = create.add_argument_group("embedding model (the knowledge base records it)")
    add_embedding_flags(embedder)


def _quoted(name: str) -> str:
    """A name as messages show it: quoted, control characters escaped."""
    from chinese_mixtral_rag.cli.console import printable

    return f"'{printable(name)}'"


def _confirmed(question: str) -> bool:
    """Yes typed at the prompt (standard input may be a pipe; end of input is no)."""
    print(question, end=" ", flush=True, file=sys.stderr)
    try:
        return input().strip().lower() in ("y", "yes", "是")
    except EOFError:
        return False


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.cli.console import print_knowledge_bases
    from chinese_mixtral_rag.store import (
        create_knowledge_base,
        delete_knowledge_base,
        list_knowledge_bases,
        open_knowledge_base,
        rename_knowledge_base,
    )

    settings = settings_from(args)
    where = settings.chroma_host or str(settings.persist_dir)
    if args.kb_command == "list":
        infos = list_knowledge_bases(settings)
        if args.json:
            print(json.dumps([asdict(i) for i in infos], ensure_ascii=False, indent=2))
        else:
            print_knowledge_bases(infos, where)
        return 0
    if args.kb_command == "create":
        info = create_knowledge_base(settings, args.name)
        print(f"created knowledge base {_quoted(info.name)} (id {info.id})")
        return 0
    if args.kb_command == "rename":
        old = open_knowledge_base(settings, args.name, must_exist=True).display_name
        info = rename_knowledge_base(settings, args.name, args.new_name)
        print(f"renamed {_quoted(old)} to {_quoted(info.name)} (id {info.id}, unchanged)")
        return 0
    kb = open_knowledge_base(settings, args.name, must_exist=True)
    if not args.yes:
        question = f"delete knowledge base {_quoted(kb.display_name)} and its uploads? [y/N]"
        if not _confirmed(question):
            print("not deleted (pass --yes to delete without asking)", file=sys.stderr)
            return 1
    from chinese_mixtral_rag.documents.uploads import remove_uploads

    info = delete_knowledge_base(settings, kb.name)
    remove_uploads(settings, info.id)
    print(f"deleted knowledge base {_quoted(info.name)}: {info.files} files, {info.chunks} chunks")
    return 0
