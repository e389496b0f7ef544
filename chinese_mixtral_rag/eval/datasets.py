"""Evaluation datasets: SQuAD/CMRC JSON and LongBench JSONL, and their corpus ingested for real.

* SQuAD / CMRC 2018 JSON: ``data`` -> ``paragraphs`` -> ``context`` and ``qas`` -> ``question``,
  ``answers[].text``;
* LongBench JSONL: one item per line with ``input`` (the question), ``context`` and ``answers``.

The corpus is the dataset's distinct contexts, written one file per context (``00000.txt``, ...)
and ingested through the real ingest path, so retrieval is measured on exactly the chunks a user's
documents would get.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chinese_mixtral_rag.errors import EvalError

if TYPE_CHECKING:
    from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, IngestReport, ProgressHook
    from chinese_mixtral_rag.store import KnowledgeBase

DatasetFormat = Literal["squad", "longbench"]


@dataclass(frozen=True)
class EvalItem:
    """One question with its gold answers and the index of its context in the dataset."""

    id: str
    question: str
    answers: tuple[str, ...]
    context: int


@dataclass
class EvalDataset:
    """Distinct contexts and the questions about them."""

    name: str
    format: DatasetFormat
    contexts: list[str] = field(default_factory=list)
    items: list[EvalItem] = field(default_factory=list)

    def source(self, item: EvalItem) -> str:
        """The ingested ``source`` of the item's context file."""
        return context_file_name(item.context)


def context_file_name(index: int) -> str:
    """File name of the ``index``-th context in the evaluation corpus (its ingested source)."""
    return f"{index:05d}.txt"


def _answer_texts(raw: Any) -> tuple[str, ...]:
    values = raw if isinstance(raw, list) else [raw]
    texts = (v.get("text", "") if isinstance(v, Mapping) else str(v) for v in values)
    return tuple(dict.fromkeys(t for t in texts if t and t.strip()))


def load_dataset(path: str | Path) -> EvalDataset:
    """Read a SQuAD/CMRC JSON file or a LongBench JSONL file (or JSON list of such items).

    Identical contexts are stored once; answers are de-duplicated in order.
    """
    path = Path(path).expanduser()
    try:
        raw_text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalError(f"Cannot read the dataset {path}: {exc.strerror or exc}.") from exc
    try:
        if path.suffix.lower() == ".jsonl":
            rows: Any = [json.loads(line) for line in raw_text.splitlines() if line.strip()]
        else:
            rows = json.loads(raw_text)
    except json.JSONDecodeError as exc:
        raise EvalError(f"{path} is not valid JSON/JSONL: {exc}.") from exc
    dataset: EvalDataset
    positions: dict[str, int] = {}

    def context_index(text: str) -> int:
        if text not in positions:
            positions[text] = len(dataset.contexts)
            dataset.contexts.append(text)
        return positions[text]

    if isinstance(rows, Mapping) and isinstance(rows.get("data"), list):
        dataset = EvalDataset(path.stem, "squad")
        for article in rows["data"]:
            for paragraph in article.get("paragraphs", []):
                context = context_index(str(paragraph["context"]))
                for qa in paragraph.get("qas", []):
                    dataset.items.append(
                        EvalItem(
                            str(qa.get("id", len(dataset.items))),
                            str(qa["question"]),
                            _answer_texts(qa.get("answers", [])),
                            context,
                        )
                    )
    elif isinstance(rows, list) and all(isinstance(r, Mapping) and "input" in r for r in rows):
        dataset = EvalDataset(path.stem, "longbench")
        for n, row in enumerate(rows):
            dataset.items.append(
                EvalItem(
                    str(row.get("_id", n)),
                    str(row["input"]),
                    _answer_texts(row.get("answers", [])),
                    context_index(str(row["context"])),
                )
            )
    else:
        raise EvalError(
            f"{path}: unknown dataset format. Expected SQuAD/CMRC JSON (data -> paragraphs -> "
            "context, qas) or LongBench JSONL (input, context, answers per line)."
        )
    if not dataset.items:
        raise EvalError(f"{path}: no questions found.")
    return dataset


def write_corpus(dataset: EvalDataset, folder: Path) -> list[Path]:
    """Write each context as ``folder/<n>.txt`` (unchanged files are left alone, other ``.txt``
    files removed, so the folder holds exactly this corpus); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, text in enumerate(dataset.contexts):
        path = folder / context_file_name(n)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        files.append(path)
    wanted = set(files)
    for stale in folder.glob("*.txt"):
        if stale not in wanted:
            stale.unlink()
    return files


def ingest_corpus(
    dataset: EvalDataset,
    kb: KnowledgeBase,
    spec: ChunkingSpec,
    folder: Path,
    *,
    workers: int | None = None,
    progress: ProgressHook | None = None,
) -> IngestReport:
    """Write the contexts into ``folder`` and ingest it into ``kb`` (incremental; files of an
    earlier corpus in the same folder are pruned)."""
    from chinese_mixtral_rag.documents.pipeline import ingest

    write_corpus(dataset, folder)
    return ingest(folder, kb, spec, prune=True, workers=workers, progress=progress)


def default_collection(dataset_path: str | Path) -> str:
    """``eval-<dataset file stem>``, reduced to the characters Chroma allows."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(dataset_path).stem).strip("-._") or "dataset"
    return f"eval-{stem}"[:60]
