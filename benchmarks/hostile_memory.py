"""Peak memory and time of ingesting hostile files next to one good file, against the good file
alone: a zip bomb (.docx whose document.xml inflates to N MB) and big text files (JSON, HTML).

Each run is a fresh ``cmrag ingest`` (in-process parsing, the tiny test embedder) whose peak RSS
is its own ``ru_maxrss`` (and its workers'). Limits are the defaults unless ``--max-text-mb``
says otherwise. Run ``.venv/bin/python benchmarks/hostile_memory.py [--bomb-mb 300]
[--text-mb 8]``; point ``PYTHONPATH`` at another checkout to measure that one. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from test_hostile_input import TEXT, WITH_PEAK, write_docx_bomb  # noqa: E402


def run(folder: Path, store: Path, embedder: Path, extra: dict[str, str]) -> tuple[float, int, str]:
    env = {
        **os.environ,
        "CMR_PERSIST_DIR": str(store),
        "CMR_EMBEDDING_MODEL": str(embedder),
        "CMR_COLLECTION": "hostile",
        "CMR_INGEST_WORKERS": "0",
        **extra,
    }
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", WITH_PEAK, str(folder), "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.environ.get("PYTHONPATH", str(REPO)),
    )
    seconds = time.perf_counter() - started
    peak = re.search(r"PEAK_KB (\d+)", result.stderr)
    mb = int(peak.group(1)) // 1024 if peak else -1
    failed = re.findall(r"failed: (\S+): (.{0,60})", result.stdout)
    return seconds, mb, "; ".join(f"{n}: {r}" for n, r in failed) or f"rc {result.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bomb-mb", type=int, default=300)
    parser.add_argument("--text-mb", type=int, default=8)
    parser.add_argument("--max-text-mb", help="CMR_MAX_TEXT_MB for the runs")
    args = parser.parse_args()
    from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_embedder

    extra = {"CMR_MAX_TEXT_MB": args.max_text_mb} if args.max_text_mb else {}
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        embedder = build_tiny_embedder(base / "embedder")
        cases: dict[str, Path] = {}
        for name in ("good", "bomb", "json", "html"):
            cases[name] = base / name
            cases[name].mkdir()
            (cases[name] / "good.txt").write_text(TEXT * 3, encoding="utf-8")
        write_docx_bomb(cases["bomb"] / "bomb.docx", args.bomb_mb)
        record = '{"n": 1, "text": "' + TEXT.strip().replace("\n", "") + '"},\n'
        with (cases["json"] / "big.json").open("w", encoding="utf-8") as handle:
            handle.write("[\n")
            while handle.tell() < args.text_mb << 20:
                handle.write(record)
            handle.write(record.rstrip(",\n") + "\n]\n")
        repeats = (args.text_mb << 20) // len(f"<p>{TEXT}</p>".encode())
        (cases["html"] / "big.html").write_text(
            "<html><body>" + f"<p>{TEXT}</p>" * repeats + "</body></html>", encoding="utf-8"
        )
        print("| case | seconds | peak RSS MB | over the good file alone | what happened |")
        print("|---|---|---|---|---|")
        good_peak = 0
        for name, folder in cases.items():
            seconds, peak, what = run(folder, base / f"store-{name}", embedder, extra)
            good_peak = good_peak or peak
            print(
                f"| {name} | {seconds:.1f} | {peak} | {peak - good_peak:+d} | {what} |", flush=True
            )


if __name__ == "__main__":
    main()
