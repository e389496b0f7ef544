"""``cmrag serve`` under load: requests/s and latency with 1, 4 and 16 concurrent clients.

What it measures: a real ``cmrag serve`` process on 127.0.0.1
(:func:`~chinese_mixtral_rag.testing.servers.cmrag_serve`) over a knowledge base filled through
its own upload route (``POST /v1/knowledge_bases/{kb}/files``) with a few real statutes from
``../shared/data/docs/laws``. For every cell, N clients (one ``httpx.AsyncClient``, or the
official ``openai.AsyncOpenAI`` with ``--client openai``) send ``POST /v1/chat/completions``
back to back for ``--seconds``, each question drawn from a small list of real questions about
those statutes, and the table shows requests/s, p50/p95 latency of the answered (200) requests,
the status codes, the latency of refused ones (429) and the server's CPU use.

Cells
    search
        ``mode="search"``: retrieval only, no model; it skips the generation queue.
    qa
        ``mode="qa"`` with the tiny random-weight Mixtral GGUF (``--max-tokens`` new tokens):
        goes through the queue (``--concurrency`` 1 for a local model, ``--queue-size 16``
        waiting), so 16 clients are all answered, only slower.
    qa, queue 2
        a second server with ``--queue-size 2`` under 16 clients: 429s appear and are immediate.
        Refused clients send again at once (no ``Retry-After`` honoured): the worst case.
    qa, llama.cpp server (``--llama-server``)
        the model behind ``python -m llama_cpp.server`` (``CMR_OPENAI_BASE_URL``,
        ``--concurrency 4``).

Before its cells, every server gets each question once per mode, so lazy loads are done and
the local model's prefix cache (``CMR_PREFIX_CACHE_BYTES``, 4 GiB by default) holds every
question's prompt: with the default, qa cells measure repeated questions over the same material
(time to first token mostly saved); ``--prefix-cache-bytes 0`` measures full prompt evaluation.

The tiny model and the tiny embedder are built once into ``.cache/bench/serve_load/``
(git-ignored); the store is a fresh temporary folder every run. ``--embedder minilm`` (default)
uses the bundled all-MiniLM-L6-v2 (meaningful vectors, real embedding cost per query);
``--embedder tiny`` a 2-layer random one (search cost without the embedding).

Nothing here passes or fails: it prints a table (progress goes to stderr).

Run: ``.venv/bin/python benchmarks/serve_load.py [--seconds 15] [--clients 1,4,16]
[--modes search,qa] [--embedder minilm|tiny] [--prefix-cache-bytes 0] [--llama-server]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chinese_mixtral_rag.testing.servers import SERVER_N_CTX, cmrag_serve, llama_cpp_server
from chinese_mixtral_rag.testing.tables import format_table

REPO = Path(__file__).resolve().parents[1]
LAWS = REPO.parent / "shared" / "data" / "docs" / "laws"
CACHE = REPO / ".cache" / "bench" / "serve_load"
KB = "laws"
DOCS = (
    "中华人民共和国宪法.pdf",
    "中华人民共和国禁毒法.docx",
    "中华人民共和国精神卫生法.docx",
    "麻醉药品和精神药品管理条例.docx",
)
QUESTIONS = (
    "中华人民共和国的行政区域是怎样划分的？",
    "全国人民代表大会常务委员会行使哪些职权？",
    "中华人民共和国主席的任期是多长时间？",
    "公民的基本权利和义务有哪些？",
    "禁毒法所称的毒品是指什么？",
    "社区戒毒的期限是多长？",
    "强制隔离戒毒的期限是多久？",
    "精神障碍的住院治疗实行什么原则？",
    "疑似精神障碍患者的诊断应当由谁作出？",
    "麻醉药品药用原植物的种植由哪个部门管理？",
    "医疗机构购买麻醉药品和第一类精神药品需要取得什么？",
    "麻醉药品和精神药品的运输有哪些要求？",
)
STATUSES = (200, 429, 503)
#: Client-side limit per request: longer than the server's queue timeout would ever make it.
REQUEST_TIMEOUT = 600.0


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class Result:
    """One request: its HTTP status (0 for a client-side error) and latency."""

    status: int
    seconds: float
    ok: bool = True
    """For a 200: the body had what the mode promises (sources; an answer in qa)."""


@dataclass
class Cell:
    """One row of the table."""

    mode: str
    clients: int
    server: str
    results: list[Result] = field(default_factory=list)
    wall: float = 0.0
    cpu: float | None = None
    """Server CPU seconds (its process tree) over the cell."""
    peak_waiting: int = 0


Send = Callable[[str], Awaitable[Result]]


def body_for(mode: str, question: str, max_tokens: int) -> dict[str, Any]:
    """The chat request for ``mode``: one user message, greedy, short answers."""
    body: dict[str, Any] = {
        "model": KB,
        "messages": [{"role": "user", "content": question}],
        "mode": mode,
    }
    if mode != "search":
        body.update(max_tokens=max_tokens, temperature=0)
    return body


def check(mode: str, reply: dict[str, Any]) -> bool:
    """Whether a 200 reply carries sources (and, beyond search, some answer text)."""
    if not reply.get("sources"):
        return False
    return mode == "search" or bool(reply["choices"][0]["message"]["content"])


def httpx_sender(http: httpx.AsyncClient, base: str, mode: str, max_tokens: int) -> Send:
    """Raw JSON POSTs with httpx."""

    async def send(question: str) -> Result:
        start = time.perf_counter()
        try:
            response = await http.post(
                f"{base}/v1/chat/completions", json=body_for(mode, question, max_tokens)
            )
        except httpx.HTTPError:
            return Result(0, time.perf_counter() - start, ok=False)
        seconds = time.perf_counter() - start
        ok = response.status_code != 200 or check(mode, response.json())
        return Result(response.status_code, seconds, ok)

    return send


def openai_sender(client: Any, mode: str, max_tokens: int) -> Send:
    """The official ``openai.AsyncOpenAI`` client (no retries), errors read as statuses."""
    import openai

    async def send(question: str) -> Result:
        body = body_for(mode, question, max_tokens)
        extra = {key: body.pop(key) for key in ("mode",)}
        start = time.perf_counter()
        try:
            reply = await client.chat.completions.create(**body, extra_body=extra)
        except openai.APIStatusError as exc:
            return Result(exc.status_code, time.perf_counter() - start)
        except openai.APIError:
            return Result(0, time.perf_counter() - start, ok=False)
        seconds = time.perf_counter() - start
        content = reply.choices[0].message.content or ""
        sources = (reply.model_extra or {}).get("sources")
        return Result(200, seconds, bool(sources) and (mode == "search" or bool(content)))

    return send


class ServerCPU:
    """CPU seconds of the processes under this one (the servers), if psutil is there."""

    def __init__(self) -> None:
        try:  # not a dependency of the project: the column shows "-" without it
            psutil: Any = importlib.import_module("psutil")
        except ImportError:
            self.me: Any = None
        else:
            self.me = psutil.Process()

    def seconds(self) -> float | None:
        if self.me is None:
            return None
        total = 0.0
        for child in self.me.children(recursive=True):
            with contextlib.suppress(Exception):
                times = child.cpu_times()
                total += times.user + times.system
        return total


async def run_cell(
    cell: Cell, base: str, send: Send, seconds: float, seed: int, cpu: ServerCPU
) -> None:
    """``cell.clients`` workers sending back to back until ``seconds`` have passed."""
    rng = random.Random(seed)
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            cell.results.append(await send(rng.choice(QUESTIONS)))

    async def watch(http: httpx.AsyncClient) -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                health = (await http.get(f"{base}/health")).json()
                cell.peak_waiting = max(cell.peak_waiting, int(health.get("waiting") or 0))
            await asyncio.sleep(0.5)

    before = cpu.seconds()
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=5) as probe:
        watcher = asyncio.create_task(watch(probe))
        try:
            await asyncio.gather(*(worker() for _ in range(cell.clients)))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    cell.wall = time.perf_counter() - start
    after = cpu.seconds()
    if before is not None and after is not None:
        cell.cpu = after - before


@contextlib.asynccontextmanager
async def client_for(kind: str, base: str) -> AsyncIterator[Any]:
    """The client every worker of a server shares (its pool holds 100 connections)."""
    if kind == "openai":
        import openai

        url = f"{base}/v1"
        async with openai.AsyncOpenAI(
            base_url=url, api_key="none", max_retries=0, timeout=REQUEST_TIMEOUT
        ) as client:
            yield client
    else:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
            yield http


def sender(kind: str, client: Any, base: str, mode: str, max_tokens: int) -> Send:
    if kind == "openai":
        return openai_sender(client, mode, max_tokens)
    return httpx_sender(client, base, mode, max_tokens)


def upload(base: str, names: Sequence[str]) -> str:
    """Fill the knowledge base through the API; a one-line summary."""
    files = [("files", (name, (LAWS / name).read_bytes())) for name in names]
    start = time.perf_counter()
    response = httpx.post(f"{base}/v1/knowledge_bases/{KB}/files", files=files, timeout=1800)
    if response.status_code != 200:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:2000]}")
    result = response.json()
    if result["failed"] or result["refused"]:
        raise RuntimeError(f"upload refused files: {result}")
    return (
        f"uploaded {len(result['added'])} files, {result['chunks_written']} chunks in "
        f"{time.perf_counter() - start:.1f} s"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest-rank on the sorted values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def row(cell: Cell) -> list[str]:
    def ms(values: Sequence[float], q: float) -> str:
        return f"{1000 * percentile(values, q):.0f}" if values else "-"

    answered = [r.seconds for r in cell.results if r.status == 200]
    refused = [r.seconds for r in cell.results if r.status == 429]
    counts = {s: sum(r.status == s for r in cell.results) for s in STATUSES}
    other = len(cell.results) - sum(counts.values())
    bad = sum(r.status == 200 and not r.ok for r in cell.results)
    cpu = f"{100 * cell.cpu / cell.wall:.0f}" if cell.cpu is not None and cell.wall else "-"
    return [
        cell.mode,
        cell.server,
        str(cell.clients),
        str(len(cell.results)),
        f"{len(cell.results) / cell.wall:.1f}",
        f"{counts[200] / cell.wall:.1f}",
        ms(answered, 0.5),
        ms(answered, 0.95),
        str(counts[200]),
        str(counts[429]),
        str(counts[503]),
        str(other),
        ms(refused, 0.5),
        ms(refused, 0.95),
        str(bad),
        str(cell.peak_waiting),
        cpu,
    ]


HEADERS = [
    "mode",
    "server",
    "clients",
    "requests",
    "req/s",
    "200/s",
    "p50 ms",
    "p95 ms",
    "200s",
    "429s",
    "503s",
    "other",
    "429 p50",
    "429 p95",
    "bad 200",
    "max wait",
    "srv CPU %",
]


def build_models(embedder: str) -> tuple[Path, Path | None]:
    """The tiny GGUF (and tiny embedder), built once into the cache."""
    from chinese_mixtral_rag.testing.tiny_model import GGUF_FILE_NAME, TINY, build_tiny_mixtral

    gguf = CACHE / "tiny-mixtral" / GGUF_FILE_NAME
    if not gguf.is_file():
        log("building the tiny model")
        build_tiny_mixtral(gguf.parent, TINY)
    if embedder != "tiny":
        return gguf, None
    from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_embedder

    return gguf, build_tiny_embedder(CACHE / "tiny-embedder")


def serve_env(
    store: Path, gguf: Path, embedder: Path | None, max_tokens: int, prefix_cache: int | None
) -> dict[str, str]:
    """``CMR_*`` settings of every server (as tests/integration/test_serve.py has them)."""
    env = {
        "CMR_PERSIST_DIR": str(store),
        "CMR_MODEL_PATH": str(gguf),
        "CMR_N_CTX": str(SERVER_N_CTX),
        "CMR_MAX_TOKENS": str(max_tokens),
        "CMR_TEMPERATURE": "0",
        "CMR_INGEST_WORKERS": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if embedder is not None:
        env["CMR_EMBEDDING_MODEL"] = str(embedder)
    if prefix_cache is not None:
        env["CMR_PREFIX_CACHE_BYTES"] = str(prefix_cache)
    return env


async def measure(
    args: argparse.Namespace,
    base: str,
    server: str,
    plan: Sequence[tuple[str, int]],
    cpu: ServerCPU,
) -> list[Cell]:
    """The cells of ``plan`` (mode, clients) on one server, after every question once per mode
    (lazy loads, and the prefix cache when on, are then warm alike for every cell)."""
    cells: list[Cell] = []
    async with client_for(args.client, base) as client:
        for mode in dict.fromkeys(m for m, _ in plan):
            send = sender(args.client, client, base, mode, args.max_tokens)
            warm = [await send(question) for question in QUESTIONS]
            codes = sorted({r.status for r in warm})
            log(
                f"  warm-up {mode}: {codes}, first {warm[0].seconds:.2f} s, then median "
                f"{statistics.median(r.seconds for r in warm[1:]):.2f} s"
            )
        for n, (mode, clients) in enumerate(plan):
            cell = Cell(mode, clients, server)
            send = sender(args.client, client, base, mode, args.max_tokens)
            await run_cell(cell, base, send, args.seconds, args.seed + n, cpu)
            log(f"  {server} {mode} x{clients}: {' '.join(row(cell)[3:12])}")
            cells.append(cell)
    return cells


def versions() -> str:
    from importlib.metadata import version

    names = ["fastapi", "uvicorn", "llama-cpp-python", "chromadb", "httpx", "openai"]
    return ", ".join(f"{n} {version(n)}" for n in names)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=15.0, help="per cell [15]")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per cell")
    parser.add_argument("--modes", default="search,qa", help="comma-separated: search, qa")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per answer [16]")
    parser.add_argument("--embedder", choices=("minilm", "tiny"), default="minilm")
    parser.add_argument("--client", choices=("httpx", "openai"), default="httpx")
    parser.add_argument(
        "--busy-clients", type=int, default=16, help="clients of the --queue-size 2 cell (0: skip)"
    )
    parser.add_argument(
        "--llama-server",
        action="store_true",
        help="also qa with the model behind python -m llama_cpp.server (--concurrency 4)",
    )
    parser.add_argument(
        "--docs", default=",".join(DOCS), help="files from ../shared/data/docs/laws"
    )
    parser.add_argument(
        "--prefix-cache-bytes",
        type=int,
        help="CMR_PREFIX_CACHE_BYTES of the local model (0: off) [the package default, 4 GiB]",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    args.mode_names = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.doc_names = [d.strip() for d in args.docs.split(",") if d.strip()]
    if set(args.mode_names) - {"search", "qa"} or not args.mode_names:
        parser.error(f"--modes takes search, qa; got {args.modes!r}")
    if not args.client_counts or min(args.client_counts) < 1 or args.seconds <= 0:
        parser.error("--clients must be positive numbers and --seconds positive")
    missing = [d for d in args.doc_names if not (LAWS / d).is_file()]
    if missing:
        parser.error(f"not found in {LAWS}: {', '.join(missing)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    gguf, embedder = build_models(args.embedder)
    cpu = ServerCPU()
    cells: list[Cell] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cmrag-serve-load-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        env = serve_env(work / "store", gguf, embedder, args.max_tokens, args.prefix_cache_bytes)
        plan = [(m, c) for m in args.mode_names for c in args.client_counts]
        log("default server (--queue-size 16, local model)")
        with cmrag_serve(env=env, log_dir=logs) as base:
            notes.append(upload(base, args.doc_names))
            log(f"  {notes[-1]}")
            cells += asyncio.run(measure(args, base, "local q16", plan, cpu))
        if args.busy_clients:
            log("busy server (--queue-size 2, local model)")
            with cmrag_serve("--queue-size", "2", env=env, log_dir=logs) as base:
                busy = [("qa", args.busy_clients)]
                cells += asyncio.run(measure(args, base, "local q2", busy, cpu))
        if args.llama_server:
            log("model behind python -m llama_cpp.server (--concurrency 4)")
            with llama_cpp_server(gguf, log_dir=logs) as model_url:
                remote = {k: v for k, v in env.items() if k != "CMR_MODEL_PATH"}
                remote["CMR_OPENAI_BASE_URL"] = model_url
                with cmrag_serve("--concurrency", "4", env=remote, log_dir=logs) as base:
                    plan = [("qa", c) for c in args.client_counts]
                    cells += asyncio.run(measure(args, base, "llama-server c4", plan, cpu))

    embed = "bundled all-MiniLM-L6-v2" if embedder is None else "tiny 2-layer random BERT"
    cache = "default" if args.prefix_cache_bytes is None else f"{args.prefix_cache_bytes} bytes"
    print(
        f"cmrag serve on 127.0.0.1, {args.seconds:g} s per cell, clients back to back "
        f"({args.client}); {platform.machine()} with {os.cpu_count()} cores, clients and "
        f"servers on the same cores; Python {platform.python_version()}"
    )
    print(
        f"model: tiny random-weight Mixtral GGUF (f32, n_ctx {SERVER_N_CTX}), max_tokens "
        f"{args.max_tokens}, temperature 0, prefix cache {cache}; embedder: {embed}; {notes[0]} "
        f"({', '.join(args.doc_names)})"
    )
    print(versions())
    print()
    print(format_table(HEADERS, [row(c) for c in cells], right=set(range(2, len(HEADERS)))))
    print()
    print("  req/s: all requests over the cell's wall time; 200/s: the answered ones")
    print("  p50/p95: latency of the 200s; 429 p50/p95: of the refused ones")
    print("  bad 200: a 200 without sources (or, in qa, without answer text)")
    print("  max wait: the most answers /health reported waiting in the queue (polled 2/s)")
    print("  srv CPU %: CPU time of the server processes over wall time (200 = both cores)")


if __name__ == "__main__":
    main()
