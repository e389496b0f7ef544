"""``cmrag download`` against a fake Hugging Face hub on 127.0.0.1, through the real CLI.

The fake hub answers exactly the routes huggingface_hub calls (the repository listing with file
sizes and LFS checksums, the tree listing, HEAD and GET of ``/{repo}/resolve/{rev}/{file}`` with
Range requests) and can cut a connection halfway, go down, or send damaged bytes. ``HF_ENDPOINT``
points at it, ``HF_HOME`` and the data folder are temporary: nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pytest

from chinese_mixtral_rag.backends.model_files import read_gguf_metadata
from chinese_mixtral_rag.cli.main import main
from chinese_mixtral_rag.testing import TinyModel, write_gguf_with_architecture

pytestmark = pytest.mark.integration

INSTRUCT = "hfl/chinese-mixtral-instruct-gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
Q4 = "ggml-model-q4_k.gguf"


@dataclass
class FakeFile:
    content: bytes
    """What the listing describes (size, sha256)."""
    lfs: bool = True
    body: bytes | None = None
    """What GET sends, when it differs from ``content`` (a damaged copy)."""

    @property
    def sent(self) -> bytes:
        return self.content if self.body is None else self.body

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def blob_id(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id

    def listing(self, name: str, *, tree: bool) -> dict[str, object]:
        size = len(self.content)
        entry: dict[str, object] = (
            {"type": "file", "path": name, "oid": self.blob_id, "size": size}
            if tree
            else {"rfilename": name, "blobId": self.blob_id, "size": size}
        )
        if self.lfs:
            entry["lfs"] = {
                ("oid" if tree else "sha256"): self.sha256,
                "size": size,
                "pointerSize": 134,
            }
        return entry


class FakeHub:
    """Repositories in memory, served the way huggingface.co (or hf-mirror.com) serves them."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, FakeFile]] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str | None]] = []
        """(method, path, Range header) of every request."""
        self.served: Counter[str] = Counter()
        """File name -> body bytes sent by GET."""
        self.cut_after: int | None = None
        """The next file GET sends this many bytes, drops the connection and the hub goes down."""
        self.down = False
        """File GETs answer 503 (a hub or mirror having trouble)."""
        self.url = ""

    def add(self, repo_id: str, name: str, content: bytes, *, lfs: bool = True) -> FakeFile:
        fake = FakeFile(content, lfs=lfs)
        self.repos.setdefault(repo_id, {})[name] = fake
        return fake

    def file_gets(self, name: str) -> list[str | None]:
        """The Range header of every GET of ``name`` so far."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + name)]

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.served.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        path = unquote(url.path)
        with hub.lock:
            hub.requests.append((self.command, path, self.headers.get("Range")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
            files = self._repo(m.group(1))
            if files is not None:
                siblings = [f.listing(n, tree=False) for n, f in files.items()]
                self._json({"id": m.group(1), "sha": COMMIT, "siblings": siblings})
        elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
            files = self._repo(m.group(1))
            if files is not None:
                self._json([f.listing(n, tree=True) for n, f in files.items()])
        elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            files = self._repo(m.group(1))
            if files is None:
                return
            fake = files.get(m.group(3))
            if fake is None:
                self._error(404, "EntryNotFound", "Entry not found")
            else:
                self._file(m.group(3), fake, head=head)
        else:
            self._error(404, "RepoNotFound", "no such route")

    def _repo(self, repo_id: str) -> dict[str, FakeFile] | None:
        files = self.server.hub.repos.get(repo_id)
        if files is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return files

    def _json(self, value: object) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, name: str, fake: FakeFile, *, head: bool) -> None:
        hub = self.server.hub
        if not head and hub.down:
            self._error(503, "ServiceUnavailable", "try again later")
            return
        data = fake.sent
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(asked.group(1)) if asked else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{fake.etag}"')
        if fake.lfs:
            self.send_header("X-Linked-Etag", f'"{fake.etag}"')
            self.send_header("X-Linked-Size", str(len(fake.content)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        with hub.lock:
            cut, hub.cut_after = hub.cut_after, None
            hub.down = hub.down or cut is not None
        sent = body if cut is None else body[:cut]
        with hub.lock:  # counted before the bytes go: the client may finish (and the test look)
            hub.served[name] += len(sent)  # before this thread runs again after the write
        self.wfile.write(sent)
        if cut is not None:  # the network goes away mid-file
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FakeHub

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a connection we cut on purpose


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    """The fake hub with hfl's instruct GGUF repository: q4_k (a small valid GGUF), q8_0 and
    f16 in three parts."""
    fake = FakeHub()
    gguf = write_gguf_with_architecture(tmp_path / "served.gguf", "llama").read_bytes()
    fake.add(INSTRUCT, ".gitattributes", b"*.gguf filter=lfs\n", lfs=False)
    fake.add(INSTRUCT, "README.md", b"# Chinese-Mixtral-Instruct-GGUF\n", lfs=False)
    fake.add(INSTRUCT, Q4, gguf)
    fake.add(INSTRUCT, "ggml-model-q8_0.gguf", gguf[: len(gguf) // 2])
    third = len(gguf) // 3
    for n, piece in enumerate([gguf[:third], gguf[third : 2 * third], gguf[2 * third :]], 1):
        fake.add(INSTRUCT, f"ggml-model-f16.gguf.part{n:02d}", piece)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.hub = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """HF_ENDPOINT at the fake hub; HF_HOME and the data folder in tmp_path (for in-process
    runs too: the hub's cache folder is read at import, so it is patched as well)."""
    values = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return dict(os.environ)


def models(tmp_path: Path) -> Path:
    """The default ``--dir`` under the test's data folder."""
    return tmp_path / "data" / "chinese-mixtral-rag" / "models"


def cmrag(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``cmrag download ARGS`` in this process: exit status, stdout, stderr."""
    status = main(["download", *args])
    out, err = capsys.readouterr()
    return status, out, err


def cmrag_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``cmrag download ARGS`` as a separate process (the variables read at import time)."""
    command = [sys.executable, "-m", "chinese_mixtral_rag", "download", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` that look like a model or a partial download."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)


# --- (1) download, verify, print the export line -------------------------------------------------


def test_downloads_verifies_and_prints_the_export_line(
    hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    result = cmrag_process(["--quant", "q4_k"], env)
    assert result.returncode == 0, result.stderr
    target = models(tmp_path) / INSTRUCT / Q4
    assert result.stdout == f"export CMR_MODEL_PATH={target}\n"
    assert target.read_bytes() == hub.repos[INSTRUCT][Q4].content
    assert read_gguf_metadata(target)["general.architecture"] == "llama"
    assert "sha256" in result.stderr
    assert "GGUF header" in result.stderr
    assert leftovers(target.parent) == [Q4]
    assert hub.served == {Q4: target.stat().st_size}

    hub.reset_counts()  # a second run finds it verified: nothing fetched, nothing hashed again
    again = cmrag_process([], env)  # q4_k is the default
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout
    assert hub.served == {}
    assert "already here" in again.stderr


# --- (2) resume after a cut connection ---------------------------------------------------------


def test_resumes_after_a_cut_connection(
    hub: FakeHub, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants

    # huggingface_hub writes what arrives in whole chunks (10 MB): a file of 2.5 chunks, cut
    # after 1.5, keeps one chunk. The small GGUF with zeros after it is still a valid GGUF.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    tiny = hub.repos[INSTRUCT][Q4].content
    hub.add(INSTRUCT, Q4, tiny + bytes(chunk * 5 // 2 - len(tiny)))
    size = len(hub.repos[INSTRUCT][Q4].content)
    hub.cut_after = chunk * 3 // 2  # the connection drops and the hub stays down for this run
    status, out, err = cmrag(["--quant", "q4_k"], capsys)
    assert status == 2
    assert out == ""
    assert "stopped at" in err
    assert "run the same command again to resume" in err
    folder = models(tmp_path) / INSTRUCT
    assert not (folder / Q4).exists()
    (partial,) = folder.glob(f"{Q4}.*.incomplete")
    kept = partial.stat().st_size
    assert 0 < kept <= chunk * 3 // 2
    assert hub.file_gets(Q4)[0] is None  # the first request asked for the whole file

    hub.down = False
    hub.reset_counts()
    status, out, err = cmrag(["--quant", "q4_k"], capsys)
    assert status == 0, err
    assert out == f"export CMR_MODEL_PATH={folder / Q4}\n"
    assert hub.file_gets(Q4) == [f"bytes={kept}-"]
    assert hub.served[Q4] == size - kept  # only the rest came over the network
    assert (folder / Q4).read_bytes() == hub.repos[INSTRUCT][Q4].content
    assert leftovers(folder) == [Q4]


# --- (3) a damaged file is refused and removed -------------------------------------------------


@pytest.mark.parametrize("damage", ["checksum", "not-gguf"])
def test_refuses_a_damaged_file(
    damage: str, hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    good = hub.repos[INSTRUCT][Q4].content
    if damage == "checksum":  # same size, some bytes flipped: only the sha256 can tell
        middle = len(good) // 2
        hub.repos[INSTRUCT][Q4].body = good[:middle] + bytes(64) + good[middle + 64 :]
        expected = "sha256"
    else:  # a mirror's error page where a (non-LFS, so unhashed) model should be
        page = b"<!DOCTYPE html><html>rate limited</html>".ljust(4096, b" ")
        hub.add(INSTRUCT, Q4, page, lfs=False)
        expected = "not a GGUF file"
    result = cmrag_process(["--quant", "q4_k"], env)
    assert result.returncode == 2
    assert result.stdout == ""
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ggml-model-q4_k.gguf downloaded from")
    assert "damaged" in message
    assert expected in message
    assert "was deleted" in message
    assert "Run the same command again" in message
    assert "HF_ENDPOINT" in message
    assert "Traceback" not in result.stderr
    assert leftovers(models(tmp_path)) == []  # nothing that looks like a model


def test_a_copy_damaged_on_disk_is_downloaded_again(
    hub: FakeHub, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = cmrag([], capsys)
    assert status == 0, err
    target = models(tmp_path) / INSTRUCT / Q4
    good = target.read_bytes()
    with target.open("r+b") as handle:  # same size, GGUF header intact, bytes changed
        handle.seek(len(good) // 2)
        handle.write(bytes(64))
    hub.reset_counts()
    status, out, err = cmrag([], capsys)
    assert status == 0, err
    assert out == f"export CMR_MODEL_PATH={target}\n"
    assert target.read_bytes() == good
    assert hub.served == {Q4: len(good)}


# --- (4) offline ---------------------------------------------------------------------------------


def test_offline_with_nothing_kept_says_so(hub: FakeHub, env: dict[str, str]) -> None:
    result = cmrag_process(["--quant", "q4_k"], {**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: HF_HUB_OFFLINE is set and no 'q4_k' GGUF of ")
    assert "Unset HF_HUB_OFFLINE" in result.stderr
    assert hub.requests == []


def test_offline_uses_the_verified_copy(
    hub: FakeHub, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, online, err = cmrag(["--quant", "q4_k"], capsys)
    assert status == 0, err
    hub.reset_counts()
    result = cmrag_process(["--quant", "q4_k"], {**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == online
    assert "the copy kept here" in result.stderr
    assert hub.requests == []


def test_offline_uses_the_hugging_face_cache(
    hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download

    cached = hf_hub_download(INSTRUCT, Q4, endpoint=hub.url)  # e.g. `hf download` earlier
    assert Path(cached).is_relative_to(tmp_path / "hf" / "hub")
    hub.reset_counts()
    result = cmrag_process(["--quant", "q4_k"], {**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"export CMR_MODEL_PATH={cached}\n"
    assert hub.requests == []


# --- (5) unknown quant -------------------------------------------------------------------------


def test_unknown_quant_lists_the_available_ones(
    hub: FakeHub, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cmrag(["--quant", "q3_k_m"], capsys)
    assert status == 2
    assert out == ""
    assert err.startswith(f"error: {INSTRUCT} has no 'q3_k_m' GGUF.")
    assert "Available quants: f16, q4_k, q8_0." in err
    assert "--quant" in err
    assert "quant=" not in err  # in the command line's words
    assert hub.served == {}


# --- more ways it goes wrong, and the other kinds of model -------------------------------------


def test_f16_parts_are_joined_in_order(
    hub: FakeHub, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cmrag(["--quant", "f16"], capsys)
    assert status == 0, err
    target = models(tmp_path) / INSTRUCT / "ggml-model-f16.gguf"
    assert out == f"export CMR_MODEL_PATH={target}\n"
    assert target.read_bytes() == hub.repos[INSTRUCT][Q4].content  # what was cut in three
    assert leftovers(target.parent) == ["ggml-model-f16.gguf"]  # the parts are gone


def test_base_model_and_explicit_file(
    hub: FakeHub, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.add("hfl/chinese-mixtral-gguf", Q4, hub.repos[INSTRUCT][Q4].content)
    status, out, err = cmrag(["--base", "--file", Q4, "--dir", str(tmp_path / "m")], capsys)
    assert status == 0, err
    assert out == f"export CMR_MODEL_PATH={tmp_path / 'm' / 'hfl/chinese-mixtral-gguf' / Q4}\n"
    assert "cmrag complete" in err

    status, out, err = cmrag(["--file", "ggml-model-q9.gguf"], capsys)
    assert status == 2
    assert "has no file 'ggml-model-q9.gguf'" in err
    assert Q4 in err
    assert "--file" in err


def test_unreachable_hub(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    status, out, err = cmrag([], capsys)
    assert status == 2
    assert out == ""
    assert err.startswith(f"error: Cannot reach http://127.0.0.1:{port} (ConnectError")
    assert "HF_ENDPOINT=https://hf-mirror.com" in err


def test_repository_not_found(
    hub: FakeHub, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = cmrag(["--repo", "hfl/no-such-model"], capsys)
    assert status == 2
    assert err.startswith(f"error: hfl/no-such-model was not found on {hub.url}")
    assert "Check --repo;" in err
    assert INSTRUCT in err


def test_disk_full_is_refused_before_downloading(
    hub: FakeHub,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    full = SimpleNamespace(total=10**12, used=10**12 - 100, free=100)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: full)
    status, _, err = cmrag(["--quant", "q4_k"], capsys)
    assert status == 2
    assert err.startswith("error: Not enough disk space in ")
    assert "--dir" in err
    assert "0.0 MB free" in err
    assert hub.served == {}


def test_hf_checkpoint(
    hub: FakeHub,
    env: dict[str, str],
    tmp_path: Path,
    tiny_model: TinyModel,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = "hfl/chinese-mixtral-instruct"
    for path in sorted(tiny_model.hf_dir.iterdir()):
        hub.add(repo, path.name, path.read_bytes(), lfs=path.suffix == ".safetensors")
    status, out, err = cmrag(["--hf"], capsys)
    assert status == 0, err
    target = models(tmp_path) / repo
    assert out == f"export CMR_MODEL_PATH={target}\n"
    for path in tiny_model.hf_dir.iterdir():
        assert (target / path.name).read_bytes() == path.read_bytes()
    assert "checkpoint files" in err

    broken = "hfl/no-weights"
    for path in sorted(tiny_model.hf_dir.iterdir()):
        if path.suffix != ".safetensors":
            hub.add(broken, path.name, path.read_bytes(), lfs=False)
    status, out, err = cmrag(["--hf", "--repo", broken], capsys)
    assert status == 2
    assert "is incomplete (no weight files" in err
