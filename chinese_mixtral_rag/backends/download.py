"""Chinese-Mixtral weights from the Hugging Face Hub or a mirror: resumable, verified, offline.

huggingface_hub 1.x downloads into a temporary file unique to the process and deletes it when
the process fails, so a 25 GB GGUF cut at 90 % would start again from zero. A GGUF therefore
goes to ``<name>.<content id>.incomplete`` next to its destination, kept when a run fails, and
the next run asks only for the rest with a Range request, through huggingface_hub's own
``http_get`` (its headers and token, its retries within a run, its progress bar on standard
error). The repository listing gives every file's size and, for LFS files, its sha256: a file
takes its real name only once its size, its checksum and the GGUF magic are right, and a file
that fails is deleted, so nothing that looks like a model is left behind. A record next to it
(``.cache/chinese-mixtral-rag/<name>.json``) saves hashing 25 GB again on the next run. A full
checkpoint goes through ``snapshot_download``, which resumes file by file.

hfl publishes ``ggml-model-<quant>.gguf`` (F16 as ``ggml-model-f16.gguf.partNN``, joined here in
order). The file is picked by quant from the repository's listing at run time, not from a list
kept here, so new quants and other repositories work too.

``HF_ENDPOINT`` (a mirror such as https://hf-mirror.com) and ``HF_HUB_OFFLINE`` are read when a
download starts, not when huggingface_hub was imported. Offline, or when the hub cannot be
reached, a copy verified by an earlier download (or a file in the Hugging Face cache) is used,
and nothing else. This module prints nothing; the caller says where the model is.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chinese_mixtral_rag.backends.model_files import check_gguf_file
from chinese_mixtral_rag.errors import DownloadError, MissingDependencyError, ModelLoadError

__all__ = [
    "BASE_CHECKPOINT_REPO",
    "BASE_GGUF_REPO",
    "DEFAULT_QUANT",
    "INSTRUCT_CHECKPOINT_REPO",
    "INSTRUCT_GGUF_REPO",
    "KNOWN_QUANTS",
    "Downloaded",
    "RemoteFile",
    "checkpoint_repo",
    "download_checkpoint",
    "download_gguf",
    "gguf_repo",
    "quant_of",
]

logger = logging.getLogger(__name__)

INSTRUCT_GGUF_REPO = "hfl/chinese-mixtral-instruct-gguf"
BASE_GGUF_REPO = "hfl/chinese-mixtral-gguf"
INSTRUCT_CHECKPOINT_REPO = "hfl/chinese-mixtral-instruct"
BASE_CHECKPOINT_REPO = "hfl/chinese-mixtral"
DEFAULT_QUANT = "q4_k"
#: What hfl's GGUF repositories hold (for help texts; the listing decides what is there).
KNOWN_QUANTS = (
    "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_s",
    "q2_k", "q3_k", "q4_0", "q4_k", "q5_0", "q5_k", "q6_k", "q8_0", "f16",
)  # fmt: skip

#: The quant is the last word before ``.gguf`` (``ggml-model-q4_k.gguf``, ``X.Q4_K_M.gguf``),
#: optionally split (``.gguf.part01``, ``-00001-of-00003.gguf``).
_QUANT = re.compile(
    r"(?:^|[-._])(i?q\d(?:_[a-z0-9]+)*|bf16|f16|f32)(?:-\d{5}-of-\d{5})?\.gguf(?:\.part\d+)?$",
    re.IGNORECASE,
)
_PART = re.compile(r"^(?P<joined>.+\.gguf)\.part(?P<n>\d+)$", re.IGNORECASE)
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_RECORDS = Path(".cache") / "chinese-mixtral-rag"
_CHUNK = 16 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repository, as its listing describes it."""

    name: str
    size: int | None
    """Bytes; None when the hub (a mirror) does not say."""
    sha256: str | None = None
    """The LFS checksum; None for files kept in git itself."""
    blob_id: str | None = None
    """The git blob id (identifies the content when there is no sha256)."""

    @property
    def content_id(self) -> str:
        return self.sha256 or self.blob_id or f"size{self.size}"


@dataclass(frozen=True)
class Downloaded:
    """Where a downloaded (or already present) model is and what was checked."""

    path: Path
    """What ``CMR_MODEL_PATH`` should be: the GGUF file or the checkpoint directory."""
    repo_id: str
    size: int
    """Bytes of the model on disk."""
    fetched: int
    """Bytes received by this call (0: it was already there)."""
    checks: tuple[str, ...]
    """What was verified, in words ("size", "sha256", "GGUF header", "checkpoint files")."""
    offline: bool = False
    """True when the hub was not asked (offline, or unreachable) and a kept copy was used."""


def gguf_repo(*, base: bool = False) -> str:
    """hfl's GGUF repository of the instruct model, or of the base model."""
    return BASE_GGUF_REPO if base else INSTRUCT_GGUF_REPO


def checkpoint_repo(*, base: bool = False) -> str:
    """hfl's Hugging Face (transformers) repository of the instruct or the base model."""
    return BASE_CHECKPOINT_REPO if base else INSTRUCT_CHECKPOINT_REPO


def quant_of(filename: str) -> str | None:
    """The quantisation a GGUF file name says (``ggml-model-q4_k.gguf`` -> ``q4_k``), or None."""
    match = _QUANT.search(Path(filename).name)
    return match.group(1).lower() if match else None


# --- GGUF --------------------------------------------------------------------------------------


def download_gguf(
    repo_id: str = INSTRUCT_GGUF_REPO,
    *,
    local_dir: str | Path,
    quant: str = DEFAULT_QUANT,
    filename: str | None = None,
    revision: str = "main",
    endpoint: str | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    tqdm_class: type[Any] | None = None,
) -> Downloaded:
    """Download the ``quant`` GGUF (or ``filename``) of ``repo_id`` to
    ``local_dir/<repo_id>/``, resuming what an earlier run left, and verify it.

    ``endpoint`` defaults to ``HF_ENDPOINT`` (else huggingface.co), ``offline`` to
    ``HF_HUB_OFFLINE``, ``token`` to huggingface_hub's (``HF_TOKEN`` or a saved login).
    Raises :class:`DownloadError` saying what failed, what is kept and what to do.
    """
    _require_hub()
    endpoint = _endpoint(endpoint)
    repo_dir = Path(local_dir).expanduser() / repo_id
    wanted = f"file '{filename}'" if filename else f"'{quant}' GGUF"

    def kept_copy() -> Path | None:
        return _kept_gguf(repo_dir, repo_id, revision, quant=quant, filename=filename)

    if _offline(offline):
        found = kept_copy()
        if found is None:
            raise DownloadError(_offline_message(wanted, repo_id, repo_dir))
        return _kept_result(found, repo_id)
    try:
        commit, files = _listing(repo_id, revision, endpoint, token)
    except _network_errors() as exc:
        found = kept_copy()
        if found is None:
            raise DownloadError(_unreachable(endpoint, exc)) from exc
        logger.warning("cannot reach %s (%s); using the copy kept in %s", endpoint, exc, found)
        return _kept_result(found, repo_id)

    names = [filename] if filename else _pick(files, quant, repo_id)
    if filename and filename not in files:
        ggufs = sorted(n for n in files if ".gguf" in n.lower()) or sorted(files)
        raise DownloadError(
            f"{repo_id} has no file '{filename}'. Its GGUF files: {', '.join(ggufs) or 'none'}. "
            "Pass one of them as filename=, or pick one by quant=."
        )
    for name in names:
        if name.startswith("/") or ".." in name.split("/"):
            raise DownloadError(f"{repo_id} lists a file named '{name}'; refusing to write it.")
    parts = [files[name] for name in names]
    with _locked(repo_dir / names[0]):
        return _download_parts(
            repo_dir, parts, _Fetcher(repo_id, commit, endpoint, token, tqdm_class)
        )


def _download_parts(repo_dir: Path, parts: Sequence[RemoteFile], fetch: _Fetcher) -> Downloaded:
    """One file, shards (each a GGUF; llama.cpp opens the first) or parts joined in order."""
    missing = [p for p in parts if not (repo_dir / p.name).is_file()]
    joined = _PART.match(parts[0].name)
    if len(parts) > 1 and joined:
        target = repo_dir / joined.group("joined")
        if target.is_file() and fetch.is_verified(target, parts, gguf=True):
            return _result(target, fetch.repo_id, 0, parts)
        _check_space(repo_dir, missing, extra=_total(parts))
        fetched = sum(fetch.ensure(part, repo_dir / part.name, gguf=False) for part in parts)
        _join([repo_dir / part.name for part in parts], target, parts)
        fetch.record(target, parts)
    else:
        target = repo_dir / parts[0].name
        _check_space(repo_dir, missing)
        fetched = sum(fetch.ensure(part, repo_dir / part.name, gguf=True) for part in parts)
    return _result(target, fetch.repo_id, fetched, parts)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two runs at once for the same file: the second waits, then finds the file verified."""
    from huggingface_hub.utils import WeakFileLock  # type: ignore[attr-defined]  # lazy

    lock = _record_path(path).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        yield


def _pick(files: Mapping[str, RemoteFile], quant: str, repo_id: str) -> list[str]:
    """The file (or the ordered parts) of ``quant``, or an error listing what there is."""
    wanted = quant.lower()
    by_quant: dict[str, list[str]] = {}
    for name in files:
        if (found := quant_of(name)) is not None:
            by_quant.setdefault(found, []).append(name)
    if wanted not in by_quant:
        available = ", ".join(sorted(by_quant)) or "none"
        raise DownloadError(
            f"{repo_id} has no '{quant}' GGUF. Available quants: {available}. Pass one of them "
            "as quant= (q4_k is a good balance; iq2_xxs the smallest that stays useful)."
        )
    names = by_quant[wanted]
    singles = [n for n in names if n.lower().endswith(".gguf") and not _SHARD.search(n)]
    if singles:
        return [min(singles, key=len)]  # a whole file beats parts or shards of the same quant
    return sorted(names, key=_part_number)


def _part_number(name: str) -> tuple[str, int]:
    match = _PART.match(name)
    return (match.group("joined"), int(match.group("n"))) if match else (name, 0)


def _join(pieces: Sequence[Path], target: Path, parts: Sequence[RemoteFile]) -> None:
    """Concatenate verified parts in order into ``target`` (what hfl says to do with ``cat``),
    then delete the parts."""
    joining = target.with_name(target.name + ".joining")
    try:
        with joining.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as source:
                    shutil.copyfileobj(source, out, _CHUNK)
    except OSError as exc:
        joining.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"The disk of {target.parent} filled up while joining the {len(pieces)} parts "
                f"into {target.name} (it needs {_human(_total(parts) or 0)}). The parts are "
                "kept: free some space and run the same command again."
            ) from exc
        raise
    problem = _problem(joining, parts, gguf=True, hash_it=False, tqdm_class=None)
    if problem is not None:
        joining.unlink()
        raise DownloadError(
            f"Joining the parts into {target.name} gave a bad file ({problem}); it was deleted "
            "and the parts are kept. Run the same command again."
        )
    os.replace(joining, target)
    for piece in pieces:
        piece.unlink()
        _record_path(piece).unlink(missing_ok=True)


class _Fetcher:
    """Downloads and verifies the files of one repository revision."""

    def __init__(
        self,
        repo_id: str,
        commit: str,
        endpoint: str,
        token: str | bool | None,
        tqdm_class: type[Any] | None,
    ) -> None:
        self.repo_id = repo_id
        self.commit = commit
        self.endpoint = endpoint
        self.token = token
        self.tqdm_class = tqdm_class

    def is_verified(self, path: Path, parts: Sequence[RemoteFile], *, gguf: bool) -> bool:
        """Whether ``path`` is exactly ``parts`` (by its record, else by hashing it once)."""
        if _record_matches(path, parts):
            return True
        problem = _problem(path, parts, gguf=gguf, hash_it=True, tqdm_class=self.tqdm_class)
        if problem is None:
            self.record(path, parts)
            return True
        logger.info(
            "%s is not the hub's %s (%s); downloading it again", path, parts[0].name, problem
        )
        return False

    def record(self, path: Path, parts: Sequence[RemoteFile]) -> None:
        """Remember that ``path`` was verified, so the next run does not hash it again."""
        stat = path.stat()
        record = {
            "repo_id": self.repo_id,
            "commit": self.commit,
            "parts": [[p.name, p.size, p.content_id] for p in parts],
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
        where = _record_path(path)
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(json.dumps(record), encoding="utf-8")

    def ensure(self, remote: RemoteFile, dest: Path, *, gguf: bool) -> int:
        """Make ``dest`` the verified ``remote`` file; return the bytes received."""
        if dest.is_file() and self.is_verified(dest, [remote], gguf=gguf):
            return 0
        partial = dest.with_name(f"{dest.name}.{remote.content_id[:16]}.incomplete")
        for stale in dest.parent.glob(f"{glob.escape(dest.name)}.*.incomplete"):
            if stale != partial:  # a partial download of another version of the file
                stale.unlink()
        fetched = self._fetch(remote, partial)
        problem = _problem(partial, [remote], gguf=gguf, hash_it=True, tqdm_class=self.tqdm_class)
        if problem is not None:
            partial.unlink()
            raise DownloadError(
                f"{remote.name} downloaded from {self.endpoint} is damaged: {problem}. The "
                f"downloaded file was deleted ({partial.name}), so nothing broken is left in "
                f"{dest.parent}. Run the same command again to download it anew; if it happens "
                "again, the server sends a bad copy: try another HF_ENDPOINT (or unset it to use "
                "huggingface.co)."
            )
        os.replace(partial, dest)
        self.record(dest, [remote])
        return fetched

    def _fetch(self, remote: RemoteFile, partial: Path) -> int:
        """Append what is missing of ``remote`` to ``partial`` (a Range request when resuming)."""
        import httpx
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # lazy

        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        if remote.size is not None and have > remote.size:
            partial.unlink()
            have = 0
        if remote.size is not None and have == remote.size:
            return 0
        if have:
            logger.info("resuming %s at byte %d", remote.name, have)
        url = hf_hub_url(self.repo_id, remote.name, revision=self.commit, endpoint=self.endpoint)

        def stopped(reason: object) -> str:
            now = partial.stat().st_size if partial.exists() else 0
            total = _human(remote.size) if remote.size is not None else "?"
            return (
                f"The download of {remote.name} from {self.endpoint} stopped at {_human(now)} "
                f"of {total} ({reason}). What arrived is kept in {partial}: run the same "
                "command again to resume from there."
            )

        try:
            with partial.open("ab") as handle:
                http_get(
                    url,
                    handle,
                    resume_size=have,
                    headers=build_hf_headers(token=self.token),
                    expected_size=remote.size,
                    displayed_filename=remote.name,
                    tqdm_class=self.tqdm_class,
                )
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise DownloadError(
                stopped(f"the server answered HTTP {status}") + " If the server keeps failing, "
                "try again later or another HF_ENDPOINT."
            ) from exc
        except httpx.HTTPError as exc:
            reason = f"network error: {type(exc).__name__}: {exc}"
            raise DownloadError(stopped(reason) + _MIRROR_HINT) from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DownloadError(
                    stopped(f"the disk of {partial.parent} is full") + " Free some space first, "
                    "or pass local_dir= with a folder on a bigger disk (and move the partial "
                    "file there)."
                ) from exc
            now = partial.stat().st_size if partial.exists() else 0
            if remote.size is not None and now > remote.size:
                partial.unlink()
                raise DownloadError(
                    f"{self.endpoint} sent more bytes of {remote.name} than the hub lists "
                    f"({now} > {remote.size}); the file was deleted. Run the same command again."
                ) from exc
            raise DownloadError(stopped(exc)) from exc
        except ValueError as exc:  # huggingface_hub refuses plain HTTP for files over 50 GB
            raise DownloadError(
                f"{remote.name}: {exc} Or download it with `hf download` and set "
                "CMR_MODEL_PATH to the file."
            ) from exc
        after = partial.stat().st_size
        return after - have if after >= have else after


def _problem(
    path: Path,
    parts: Sequence[RemoteFile],
    *,
    gguf: bool,
    hash_it: bool,
    tqdm_class: type[Any] | None,
) -> str | None:
    """What is wrong with ``path`` as the concatenation of ``parts``, or None: its size, the
    sha256 of each part's bytes (``hash_it``), and the GGUF magic (``gguf``)."""
    label = parts[0].name if len(parts) == 1 else path.name
    size = path.stat().st_size
    expected = _total(parts)
    if expected is not None and size != expected:
        return f"it has {size} bytes, the hub lists {expected}"
    if gguf:
        try:
            check_gguf_file(path)
        except ModelLoadError:
            with path.open("rb") as handle:
                start = handle.read(16)
            return f"it is not a GGUF file (it starts with {start!r}, not b'GGUF')"
    if hash_it and any(p.sha256 for p in parts):
        from huggingface_hub.utils.tqdm import tqdm as hub_tqdm

        bar_class = tqdm_class or hub_tqdm
        with (
            path.open("rb") as handle,
            bar_class(  # disable=None: a bar on a terminal only, as huggingface_hub's own
                total=size, unit="B", unit_scale=True, desc=f"sha256 {label}", disable=None
            ) as bar,
        ):
            for part in parts:
                digest = hashlib.sha256()
                left = part.size if part.size is not None else size
                while left > 0 and (chunk := handle.read(min(_CHUNK, left))):
                    digest.update(chunk)
                    left -= len(chunk)
                    bar.update(len(chunk))
                if part.sha256 and digest.hexdigest() != part.sha256.lower():
                    return (
                        f"the sha256 of {part.name} is {digest.hexdigest()}, the hub lists "
                        f"{part.sha256}"
                    )
    return None


def _total(parts: Sequence[RemoteFile]) -> int | None:
    sizes = [p.size for p in parts]
    return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


# --- records of verified files and copies kept for offline use ---------------------------------


def _record_path(path: Path) -> Path:
    return path.parent / _RECORDS / f"{path.name}.json"


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _record_matches(path: Path, parts: Sequence[RemoteFile] | None) -> bool:
    """``path`` is unchanged since it was verified (and was verified as ``parts``, if given)."""
    record = _read_record(path)
    if record is None or not path.is_file():
        return False
    stat = path.stat()
    if record.get("size") != stat.st_size or record.get("mtime_ns") != stat.st_mtime_ns:
        return False
    return parts is None or record.get("parts") == [[p.name, p.size, p.content_id] for p in parts]


def _kept_gguf(
    repo_dir: Path, repo_id: str, revision: str, *, quant: str, filename: str | None
) -> Path | None:
    """A GGUF an earlier download verified in ``repo_dir``, or one in the Hugging Face cache."""

    def wanted(name: str) -> bool:
        return name == filename if filename else quant_of(name) == quant.lower()

    records = repo_dir / _RECORDS
    for record_file in sorted(records.glob("*.json")) if records.is_dir() else []:
        path = repo_dir / record_file.name.removesuffix(".json")
        record = _read_record(path) or {}
        names = [path.name] + [str(p[0]) for p in record.get("parts", [])]
        if _PART.match(path.name) or not any(wanted(n) for n in names):
            continue
        if _record_matches(path, None) and _is_gguf(path):
            return path
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    cached = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    try:
        commit = (cached / "refs" / revision).read_text(encoding="utf-8").strip()
    except OSError:
        commit = revision
    snapshot = cached / "snapshots" / commit
    for path in sorted(snapshot.glob("*.gguf")) if snapshot.is_dir() else []:
        if wanted(path.name) and _is_gguf(path):
            return path
    return None


def _is_gguf(path: Path) -> bool:
    try:
        check_gguf_file(path)
    except ModelLoadError:
        return False
    return True


def _kept_result(path: Path, repo_id: str) -> Downloaded:
    checks = ("verified when downloaded",) if _record_matches(path, None) else ()
    return Downloaded(path, repo_id, path.stat().st_size, 0, (*checks, "GGUF header"), True)


def _result(path: Path, repo_id: str, fetched: int, parts: Sequence[RemoteFile]) -> Downloaded:
    checks = ["size"] if _total(parts) is not None else []
    if all(p.sha256 for p in parts):
        checks.append("sha256")
    checks.append("GGUF header")
    return Downloaded(path, repo_id, path.stat().st_size, fetched, tuple(checks))


# --- full Hugging Face checkpoints --------------------------------------------------------------


def download_checkpoint(
    repo_id: str = INSTRUCT_CHECKPOINT_REPO,
    *,
    local_dir: str | Path,
    revision: str = "main",
    endpoint: str | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    tqdm_class: type[Any] | None = None,
) -> Downloaded:
    """Download the checkpoint ``repo_id`` (transformers) into ``local_dir/<repo_id>/`` with
    ``snapshot_download`` (finished files are kept across runs), then check that every listed
    file has the hub's size and that config.json, a tokenizer and all weights are there."""
    _require_hub()
    from huggingface_hub import snapshot_download

    endpoint = _endpoint(endpoint)
    dest = Path(local_dir).expanduser() / repo_id
    if _offline(offline):
        if _checkpoint_problem(dest) is None:
            return _checkpoint_result(dest, repo_id, 0, ("checkpoint files",), offline=True)
        raise DownloadError(_offline_message("checkpoint", repo_id, dest))
    try:
        commit, files = _listing(repo_id, revision, endpoint, token)
    except _network_errors() as exc:
        if _checkpoint_problem(dest) is None:
            logger.warning("cannot reach %s (%s); using the checkpoint in %s", endpoint, exc, dest)
            return _checkpoint_result(dest, repo_id, 0, ("checkpoint files",), offline=True)
        raise DownloadError(_unreachable(endpoint, exc)) from exc

    missing = [f for f in files.values() if not _has_size(dest / f.name, f.size)]
    _check_space(dest, missing)
    try:
        snapshot_download(
            repo_id,
            revision=commit,
            local_dir=dest,
            endpoint=endpoint,
            token=token,
            tqdm_class=tqdm_class,
        )
    except _network_errors() as exc:
        raise DownloadError(
            _unreachable(endpoint, exc) + f" The files that finished are kept in {dest}: run the "
            "same command again to fetch the rest."
        ) from exc
    except _hub_errors() as exc:
        raise DownloadError(_hub_message(exc, repo_id, revision, endpoint)) from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"The disk of {dest} is full. The files that finished are kept: free some space "
                "(or pass local_dir= with a folder on a bigger disk) and run the same command "
                "again."
            ) from exc
        raise DownloadError(
            f"The download of {repo_id} into {dest} failed: {exc}. Run the same command again."
        ) from exc
    wrong = [f.name for f in files.values() if not _has_size(dest / f.name, f.size)]
    problem = f"files missing or of the wrong size: {', '.join(wrong)}" if wrong else None
    problem = problem or _checkpoint_problem(dest)
    if problem is not None:
        raise DownloadError(
            f"The checkpoint in {dest} is incomplete ({problem}). Run the same command again; "
            "if it stays so, delete the folder and download it anew."
        )
    fetched = sum(f.size or 0 for f in missing)
    return _checkpoint_result(dest, repo_id, fetched, ("size", "checkpoint files"))


def _has_size(path: Path, size: int | None) -> bool:
    return path.is_file() and (size is None or path.stat().st_size == size)


def _checkpoint_problem(path: Path) -> str | None:
    """What a transformers checkpoint directory lacks (config, tokenizer, weights), or None."""
    if not path.is_dir():
        return f"{path} is not a directory"
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable config.json"
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        return "no tokenizer (tokenizer.json or tokenizer.model)"
    indexes = sorted(path.glob("*.index.json"))
    for index in indexes:
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return f"{index.name} is not a readable weight index"
        if absent := sorted(s for s in shards if not (path / s).is_file()):
            return f"weight files missing: {', '.join(absent)}"
    weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
    return None if weights else "no weight files (*.safetensors)"


def _checkpoint_result(
    path: Path, repo_id: str, fetched: int, checks: tuple[str, ...], *, offline: bool = False
) -> Downloaded:
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return Downloaded(path, repo_id, size, fetched, checks, offline)


# --- the hub -------------------------------------------------------------------------------------


_MIRROR_HINT = (
    " Check your connection or proxy; from mainland China set HF_ENDPOINT=https://hf-mirror.com."
)


def _require_hub() -> None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("huggingface_hub", "hub", "Downloading a model") from exc


def _endpoint(endpoint: str | None) -> str:
    """The hub to ask: the argument, else ``HF_ENDPOINT`` now, else huggingface_hub's."""
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline(offline: bool | None) -> bool:
    """The argument, else ``HF_HUB_OFFLINE`` as set now (or when huggingface_hub was imported)."""
    from huggingface_hub import constants

    if offline is not None:
        return offline
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _listing(
    repo_id: str, revision: str, endpoint: str, token: str | bool | None
) -> tuple[str, dict[str, RemoteFile]]:
    """The commit ``revision`` is at (downloads pin it, so a push mid-download cannot mix two
    versions) and name -> file of the repository there, with sizes and LFS checksums.

    Raises :class:`DownloadError` for every failure but the network's (those, the callers
    answer with a kept copy where there is one)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(
            repo_id, revision=revision, files_metadata=True
        )
    except _hub_errors() as exc:
        raise DownloadError(_hub_message(exc, repo_id, revision, endpoint)) from exc
    except HFValidationError as exc:
        raise DownloadError(
            f"'{repo_id}' is not a hub repository id ({exc}). Check repo_id= (owner/name)."
        ) from exc
    except ValueError as exc:  # not JSON: an HTML page, a proxy's answer
        raise DownloadError(
            f"{endpoint} did not answer like a Hugging Face hub ({exc}). Check HF_ENDPOINT: it "
            "must be the hub or a mirror of it, such as https://hf-mirror.com."
        ) from exc
    files = {}
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        size = sibling.size if sibling.size is not None else (lfs.size if lfs else None)
        files[sibling.rfilename] = RemoteFile(
            sibling.rfilename, size, lfs.sha256 if lfs else None, sibling.blob_id
        )
    return info.sha or revision, files


def _network_errors() -> tuple[type[BaseException], ...]:
    """The hub could not be reached (the offline switch of huggingface_hub included)."""
    import httpx
    from huggingface_hub.errors import OfflineModeIsEnabled

    return (httpx.RequestError, OfflineModeIsEnabled)


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError,)


def _unreachable(endpoint: str, exc: BaseException) -> str:
    return f"Cannot reach {endpoint} ({type(exc).__name__}: {exc})." + _MIRROR_HINT


def _hub_message(exc: BaseException, repo_id: str, revision: str, endpoint: str) -> str:
    """The hub's HTTP error in words, with what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return (
            f"{repo_id} on {endpoint} needs you to accept its terms: do so on its page, then log "
            "in with `hf auth login` or set HF_TOKEN."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{repo_id} was not found on {endpoint} (or it is private). Check repo_id=; "
            f"Chinese-Mixtral's are {INSTRUCT_GGUF_REPO}, {BASE_GGUF_REPO} (GGUF) and "
            f"{INSTRUCT_CHECKPOINT_REPO}, {BASE_CHECKPOINT_REPO}."
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id} on {endpoint} has no revision '{revision}'. Check revision=."
    if isinstance(exc, RemoteEntryNotFoundError):
        return f"{endpoint} has no such file in {repo_id} ({exc}). Check filename=."
    response = getattr(exc, "response", None)
    status = response.status_code if response is not None else "?"
    return (
        f"{endpoint} answered HTTP {status} for {repo_id}. Try again later, or another "
        "HF_ENDPOINT (unset it for huggingface.co, or https://hf-mirror.com)."
    )


def _offline_message(wanted: str, repo_id: str, where: Path) -> str:
    from huggingface_hub import constants

    return (
        f"HF_HUB_OFFLINE is set and no {wanted} of {repo_id} was downloaded before (nothing in "
        f"{where} nor in the Hugging Face cache {constants.HF_HUB_CACHE}). Unset HF_HUB_OFFLINE "
        "and run again to download it (from mainland China with "
        "HF_ENDPOINT=https://hf-mirror.com), or copy the file there."
    )


def _check_space(folder: Path, files: Sequence[RemoteFile], *, extra: int | None = 0) -> None:
    """Refuse to start what cannot finish: the missing bytes must fit on ``folder``'s disk."""
    needed = (extra or 0) + sum(
        max((f.size or 0) - _partial_size(folder / f.name, f), 0) for f in files
    )
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"Not enough disk space in {folder}: the download needs {_human(needed)} more, the "
            f"disk has {_human(free)} free. Free some space, or pass local_dir= with a folder on "
            "a bigger disk, and run again."
        )


def _partial_size(dest: Path, remote: RemoteFile) -> int:
    partial = dest.with_name(f"{dest.name}.{remote.content_id[:16]}.incomplete")
    return partial.stat().st_size if partial.is_file() else 0


def _human(size: int) -> str:
    """Bytes in GB (model files) or MB (small ones), as a download page says them."""
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
