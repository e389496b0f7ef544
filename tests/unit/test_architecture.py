"""The shape of the house, read from the source with ast (nothing is imported or run).

The import rules live in docs/ARCHITECTURE.md (its ``rules`` block) and are enforced here, so the
document and the code cannot drift apart: no import cycle, no LangChain under backends/, at most
9 root modules, no wing importing what its rule does not allow, no import of another module's
private name, no exception class outside errors.py, no print outside the faces, no core message
naming a command-line flag.
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "chinese_mixtral_rag"
NAME = PACKAGE.name
FACES = {"cli", "web", "api"}
#: External programs whose own flags may appear in messages (they are not ours).
EXTERNAL_COMMANDS = ("chroma run", "qpdf", "libreoffice", "pip install")


@dataclass
class Module:
    name: str
    """Dotted name below the package: "qa.chain", "settings", "__init__", "eval.__main__"."""
    path: Path
    tree: ast.Module
    runtime: set[str] = field(default_factory=set)
    """Package modules imported when the module runs (function bodies included)."""
    typing: set[str] = field(default_factory=set)
    """Package modules imported only under ``if TYPE_CHECKING:``."""

    @property
    def wing(self) -> str:
        return self.name.split(".")[0]

    @property
    def is_entry_point(self) -> bool:
        return self.name == "__main__" or self.name.endswith(".__main__")


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(sub) for sub in ast.walk(node))
    return skip


def parse(path: Path) -> ast.Module:
    """``ast.parse``, tried again on CPython 3.11.7's spurious "AST constructor recursion depth
    mismatch": the constructor's depth counter is shared by all threads (gh-106905, fixed in
    3.11.8), and a thread an earlier test left running may be parsing too (LangChain parses a
    lambda's source when it builds a RunnableLambda). Seen once in CI; the next parse succeeds."""
    for attempt in range(20):
        try:
            return ast.parse(path.read_text(encoding="utf-8"))
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == 19:
                raise
            time.sleep(0.25)  # up to 5 s for the other thread to finish
    raise AssertionError("unreachable")


@cache
def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = parse(path)
        module = Module(_dotted(path), path, tree)
        found[module.name] = module
    for module in found.values():
        typing_only = _type_checking_nodes(module.tree)
        for node in ast.walk(module.tree):
            targets = set(_imported(node, module, found))
            (module.typing if id(node) in typing_only else module.runtime).update(targets)
    return found


def _imported(node: ast.AST, module: Module, known: dict[str, Module]) -> Iterator[str]:
    """Package modules an import statement names ("__init__" for the package itself)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.name.split(".")
            if module.path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - node.level + 1]
            absolute = ".".join([NAME, *base, *([node.module] if node.module else [])])
        else:
            absolute = node.module or ""
        names = [absolute]
        names += [f"{absolute}.{alias.name}" for alias in node.names]
    for name in names:
        if name == NAME:
            yield "__init__"
        elif name.startswith(NAME + "."):
            rel = name[len(NAME) + 1 :]
            if rel in known:
                yield rel


@cache
def rules() -> dict[str, set[str] | None]:
    """Wing or root module -> what it may import (None: anything), from ARCHITECTURE.md."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = re.search(r"```rules\n(.*?)```", text, re.DOTALL)
    assert block, "docs/ARCHITECTURE.md has no ```rules block"
    parsed: dict[str, set[str] | None] = {}
    for line in block.group(1).strip().splitlines():
        wing, _, allowed = line.partition(":")
        words = allowed.split()
        parsed[wing.strip()] = None if words == ["*"] else {w for w in words if w != "-"}
    return parsed


def _allowed(target: str, allowed: set[str]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


def test_every_wing_and_root_module_has_a_rule_and_a_line_in_the_document() -> None:
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    wings = {m.wing for m in modules().values()} - {"__init__", "__main__"}
    assert wings == set(rules()), "the rules block must list exactly the wings and root modules"
    for wing in wings:
        is_package = (PACKAGE / wing / "__init__.py").is_file()
        assert (f"`{wing}/`" if is_package else f"`{wing}.py`") in text, wing


def test_at_most_nine_modules_at_the_package_root() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(root) <= 9, root


def test_every_wing_says_what_it_is() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        docstring = ast.get_docstring(parse(init))
        assert docstring, f"{init.parent.name}/ has no docstring"


def test_no_import_cycle() -> None:
    graph = {name: module.runtime - {name} for name, module in modules().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_every_import_follows_the_rules_of_its_wing() -> None:
    broken = []
    for module in modules().values():
        if module.name == "__init__":
            continue  # the public API re-exports lazily
        if module.name == "__main__":
            allowed: set[str] | None = {"cli"}
        else:
            allowed = rules()[module.wing]
        if allowed is None:
            continue
        if module.is_entry_point:
            allowed = allowed | {"cli"}
        for target in sorted(module.runtime | module.typing):
            wing = target.split(".")[0]
            if wing != module.wing and not _allowed(target, allowed):
                broken.append(f"{module.name} imports {target}")
    assert not broken, "imports the rules in docs/ARCHITECTURE.md do not allow:\n" + "\n".join(
        broken
    )


def test_backends_import_no_langchain() -> None:
    for module in modules().values():
        if module.wing != "backends":
            continue
        for node in ast.walk(module.tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.startswith("langchain") for n in names), module.name


def test_no_module_imports_another_modules_private_names() -> None:
    broken = []
    for module in modules().values():
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(NAME):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    broken.append(f"{module.name}: from {node.module} import {alias.name}")
    assert not broken, broken


def test_every_exception_is_defined_in_errors() -> None:
    elsewhere = []
    for module in modules().values():
        if module.name == "errors" or module.wing == "testing":
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base) for base in node.bases]
                if any(base.endswith(("Error", "Exception")) for base in bases):
                    elsewhere.append(f"{module.name}.{node.name}")
    assert not elsewhere, f"exceptions belong in errors.py: {elsewhere}"


def test_only_the_faces_print() -> None:
    printing = []
    for module in modules().values():
        if module.wing in FACES or module.is_entry_point:
            continue
        for node in ast.walk(module.tree):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Name) and func.id == "print":
                printing.append(f"{module.name}:{node.lineno}")
    assert not printing, f"print outside the faces {sorted(FACES)}: {printing}"


def _cli_flags() -> set[str]:
    from chinese_mixtral_rag.cli.main import build_parser

    parser, subparsers = build_parser()
    flags = set()
    for sub in [parser, *subparsers.values()]:
        for action in sub._actions:
            flags.update(o for o in action.option_strings if o.startswith("--"))
    return flags - {"--help", "--version"}


def _message_text(call: ast.Call) -> str:
    parts = []
    for arg in call.args:
        for node in ast.walk(arg):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts.append(node.value)
    return "".join(parts)


def _messages(module: Module) -> Iterator[tuple[int, str]]:
    """Text of exceptions raised and of log calls (what a user reads)."""
    for node in ast.walk(module.tree):
        call = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            call = node.exc
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in {"logger", "logging"}
        ):
            call = node
        if call is not None:
            yield call.lineno, _message_text(call)


def test_core_messages_name_no_command_line_flag() -> None:
    flags = _cli_flags()
    assert {"--model-path", "--embedding-model", "--collection"} <= flags
    pattern = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
    broken = []
    for module in modules().values():
        if module.wing in FACES or module.wing == "testing" or module.is_entry_point:
            continue
        for line, text in _messages(module):
            if any(command in text for command in EXTERNAL_COMMANDS):
                continue
            named = [f for f in pattern.findall(text) if f in flags]
            if named or "cmrag " in text:
                broken.append(f"{module.name}:{line}: {text[:80]!r}")
    assert not broken, "core messages must use keyword names; the CLI translates:\n" + "\n".join(
        broken
    )
