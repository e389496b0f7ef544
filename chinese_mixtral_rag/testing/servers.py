"""Real servers on 127.0.0.1 for tests and benchmarks, started and stopped by the caller.

``python -m llama_cpp.server`` over a tiny GGUF, ``chroma run``, ``cmrag serve``: each is a
subprocess on a free loopback port, ready when its health URL answers, killed (with its process
group) on exit, its output kept in a log file that the error quotes when it does not come up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

#: Context of the llama.cpp server in tests: llama-cpp-python's server does not report it, so the
#: client is told with n_ctx.
SERVER_N_CTX = 4096


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status < 500)
    except OSError:
        return False


@contextlib.contextmanager
def running(
    command: Sequence[str],
    health_url: str,
    *,
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends; enter once ``health_url`` answers."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(health_url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(
                    f"{command[0]} did not come up at {health_url} "
                    f"(exit code {process.poll()}); its output:\n{tail}"
                )
            time.sleep(0.2)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process group, then kill it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def llama_cpp_server(
    gguf: Path,
    *,
    log_dir: Path,
    n_ctx: int = SERVER_N_CTX,
    embedding: bool = False,
    api_key: str | None = None,
    alias: str | None = None,
) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server over ``gguf``; yields its base URL (``/v1``)."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", "1",
    ]  # fmt: skip
    if embedding:
        command += ["--embedding", "true"]
    if api_key:
        command += ["--api_key", api_key]
    if alias:
        command += ["--model_alias", alias]
    base = f"http://127.0.0.1:{port}"
    with running(command, f"{base}/docs", log=log_dir / f"llama-server-{port}.log"):
        yield f"{base}/v1"


@contextlib.contextmanager
def chroma_server(path: Path, *, log_dir: Path) -> Iterator[tuple[str, int]]:
    """``chroma run`` over ``path``; yields (host, port)."""
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    command = [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    with running(command, url, log=log_dir / f"chroma-{port}.log"):
        yield "127.0.0.1", port


@contextlib.contextmanager
def cmrag_serve(
    *args: str, env: dict[str, str], log_dir: Path, timeout: float = 180.0
) -> Iterator[str]:
    """``cmrag serve`` with ``args`` and ``CMR_*`` ``env``; yields its base URL (no ``/v1``)."""
    port = free_port()
    cmrag = Path(sys.executable).with_name("cmrag")
    command = [str(cmrag), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    base = f"http://127.0.0.1:{port}"
    log = log_dir / f"cmrag-serve-{port}.log"
    with running(command, f"{base}/health", log=log, env=env, timeout=timeout):
        yield base
