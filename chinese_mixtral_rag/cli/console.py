"""Console output of the commands: rich progress bars and tables, the one place that draws them.

Progress goes to standard error (so ``--json`` and piped answers stay clean); summaries and tables
to standard output. Names that come from files are printed as text, never as rich markup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.documents.pipeline import ProgressHook

if TYPE_CHECKING:
    from chinese_mixtral_rag.documents.pipeline import FileOutcome, IngestReport
    from chinese_mixtral_rag.store import KBInfo, KnowledgeBase


class IngestProgress(ProgressHook):
    """Rich progress bars over an ingest: files done of files found (files/s, chunks/s), pages
    of a scan being OCR'd ("OCR 12/31 scan.pdf", one bar per file while it is read), then vectors
    computed of those pending (a file is searchable by words before its vectors)."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}  {task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=quiet,
            transient=False,
        )
        self.task: Any = None
        self.vector_task: Any = None
        self.ocr_tasks: dict[str, Any] = {}
        self.chunks = 0
        self.files = 0

    def __enter__(self) -> IngestProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, files: int, to_parse: int) -> None:
        self.task = self.progress.add_task("ingest ", total=files, unit="files", rate="")

    def file_done(self, outcome: FileOutcome) -> None:
        if outcome.status in {"added", "updated"}:
            self.chunks += outcome.chunks
        if self.task is None or outcome.status == "removed":
            return
        self.progress.advance(self.task)
        elapsed = self.progress.tasks[0].elapsed or 1e-9
        done = self.progress.tasks[0].completed
        self.progress.update(
            self.task, rate=f"{done / elapsed:.1f} files/s  {self.chunks / elapsed:.0f} chunks/s"
        )

    def reading(self, source: str) -> None:
        if self.task is not None:  # the file being read, from the first second
            self.progress.update(self.task, unit=f"files  {printable(source)}")

    def pages(self, source: str, done: int, total: int) -> None:
        task = self.ocr_tasks.get(source)
        if task is None:
            task = self.progress.add_task("OCR    ", total=total, unit=printable(source), rate="")
            self.ocr_tasks[source] = task
        elapsed = next(t for t in self.progress.tasks if t.id == task).elapsed or 1e-9
        self.progress.update(task, completed=done, rate=f"{done / elapsed:.2f} pages/s")
        if done >= total:
            self.progress.remove_task(self.ocr_tasks.pop(source))

    def vectors(self, done: int, pending: int) -> None:
        if self.vector_task is None:
            self.vector_task = self.progress.add_task("vectors", unit="chunks", rate="")
        task = next(t for t in self.progress.tasks if t.id == self.vector_task)
        rate = f"{done / (task.elapsed or 1e-9):.1f} chunks/s"
        self.progress.update(self.vector_task, completed=done, total=done + pending, rate=rate)


def printable(text: str) -> str:
    """``text`` safe for a terminal: control and other invisible characters shown as escapes
    (a name holding ``\x1b[31m`` must not recolour the terminal, a newline must not split a
    row), everything else (Chinese included) as it is."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def print_ingest_report(
    report: IngestReport, kb: KnowledgeBase, explain: Callable[[str], str] = str
) -> None:
    """The summary (one line per figure, readable in any terminal), then each file that was not
    ingested (or was, with a remark) and why. ``explain`` puts reasons in the command line's
    words."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    title = Text(f"{printable(kb.display_name)}: {report.root}")
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("files", justify="right")
    for status in ("added", "updated", "unchanged", "removed", "failed", "skipped"):
        table.add_row(f"files {status}", str(report.count(status)))
    table.add_row("chunks written", str(report.chunks_written))
    table.add_row("chunks embedded", str(report.chunks_embedded))
    if report.first_searchable is not None:
        table.add_row("searchable by words after", f"{report.first_searchable:.1f} s")
    table.add_row("chunks deleted", str(report.chunks_deleted))
    table.add_row("chunks in collection", str(kb.count()))
    table.add_row("seconds", f"{report.seconds:.1f}")
    console.print(table)
    for outcome in report.outcomes:
        if outcome.reason:
            line = f"  {outcome.status}: {outcome.source}: {explain(outcome.reason)}"
            console.print(printable(line), markup=False, highlight=False)
    if report.missing:
        console.print(
            f"  {len(report.missing)} stored file(s) no longer exist under {report.root} "
            "(run with --prune to remove them): "
            + ", ".join(printable(name) for name in report.missing[:5]),
            markup=False,
            highlight=False,
        )
    if report.stopped_early:
        console.print("  stopped at the first failure (--strict)")


_STATES = {
    "ready": "ready",
    "words": "words only ({pending} vectors to compute)",
    "partial": "cut short: ingest again",
}


def print_documents(kb: KnowledgeBase) -> None:
    """The stored documents of a knowledge base: source, chunks, title, ingest time."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    states = kb.file_states()
    table = Table(
        title=Text(f"{printable(kb.display_name)}: {len(states)} documents, {kb.count()} chunks")
    )
    for column in ("source", "chunks", "title", "ingested", "state"):
        # Names wrap instead of being cut: two long names must never look alike.
        table.add_column(column, justify="right" if column == "chunks" else "left", overflow="fold")
    for source, state in sorted(states.items()):
        complete = "" if state.chunks == state.expected else f" (of {state.expected})"
        table.add_row(
            Text(printable(source)),
            f"{state.chunks}{complete}",
            Text(printable(state.title)),
            state.ingested_at,
            _STATES[state.search_state].format(pending=state.pending),
        )
    Console().print(table)


def print_knowledge_bases(infos: Sequence[KBInfo], where: str) -> None:
    """The knowledge bases of a store: name, id (where it differs), files, chunks, made."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not infos:
        print(f"no knowledge bases in {where} yet: ingest documents or run `cmrag kb create`")
        return
    table = Table(title=Text(f"{len(infos)} knowledge bases in {where}"), title_justify="left")
    for column in ("name", "id", "files", "chunks", "created"):
        table.add_column(column, justify="right" if column in ("files", "chunks") else "left")
    for info in infos:
        table.add_row(
            Text(printable(info.name)),
            "" if info.id == info.name else info.id,
            str(info.files),
            str(info.chunks),
            info.created.replace("T", " ").removesuffix("+00:00"),
        )
    Console().print(table)


def progress_bar(quiet: bool, label: str, total: int) -> tuple[Any, Callable[[Any], None]]:
    """A rich bar of ``total`` steps on standard error and the callback that advances it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeElapsedColumn as Elapsed

    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        Elapsed(),
        console=Console(stderr=True),
        disable=quiet,
    )
    task = progress.add_task(label, total=total)
    return progress, lambda _: progress.advance(task)


def _format(name: str, value: float) -> str:
    if name == "questions":
        return str(int(value))
    return f"{value:.1f}" if name.endswith("_ms") else f"{value:.3f}"


def print_comparison(
    title: str, sides: Mapping[str, Mapping[str, float]], notes: Sequence[str] = ()
) -> None:
    """Metrics of several retrievers side by side: ``side metric value`` lines (easy to grep),
    then one table with a column per side."""
    from rich.console import Console
    from rich.table import Table

    names = list(next(iter(sides.values()), {}))
    for side, metrics in sides.items():
        for name in names:
            print(f"{side} {name} {_format(name, metrics[name])}")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for side in sides:
        table.add_column(side, justify="right")
    for name in names:
        table.add_row(name, *(_format(name, metrics[name]) for metrics in sides.values()))
    Console().print(table)
    for note in notes:
        print(note)


def print_metrics(title: str, metrics: Mapping[str, float], notes: Sequence[str] = ()) -> None:
    """One ``name value`` line per metric (easy to grep), then the same as a table."""
    from rich.console import Console
    from rich.table import Table

    for name, value in metrics.items():
        print(f"{name} {_format(name, value)}")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, _format(name, value))
    Console().print(table)
    for note in notes:
        print(note)  # not through rich: a long line must not be wrapped
