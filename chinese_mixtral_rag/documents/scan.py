"""Which files of a folder are read, and why the others are not.

Only regular files are read: a named pipe, a device or a socket with a document's name would hang
the ingest or feed it endless bytes (``zero.txt -> /dev/zero``). Symbolic links are followed only
while their target stays inside the ingested folder, unless ``follow_symlinks`` says otherwise
(and then each file reached that way says so in the report): a link must not carry
``/etc/passwd`` into a searchable knowledge base. Hidden files and folders, Office lock files,
unsupported types and files over the size limits are reported, never silently dropped. Every
decision is one :class:`Note` for the report.

Files are opened without blocking and checked again once open (a path can change between the
scan and the read), and never read past the size limit.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.errors import DocumentError

__all__ = ["Found", "Note", "Scan", "hash_regular_file", "read_regular_file", "scan"]

_BLOCK = 1 << 20


#: What to do with a file of a type no loader reads.
CONVERT_HINTS = {
    ".doc": "save it as .docx (Word, or libreoffice --headless --convert-to docx)",
    ".ppt": "save it as .pptx (PowerPoint, or libreoffice --headless --convert-to pptx)",
    ".wps": "save it as .docx from WPS",
    ".rtf": "save it as .docx",
    ".mobi": "convert it to .epub (e.g. Calibre)",
    ".azw3": "convert it to .epub (e.g. Calibre)",
    ".heic": "save it as .jpg (on the phone: Settings > Camera > Formats > Most Compatible)",
    ".heif": "save it as .jpg",
    ".gif": "save it as .png",
}


@dataclass(frozen=True)
class Found:
    """A file to read: where it is, its name in the knowledge base, how it was reached."""

    path: Path
    source: str
    size: int
    via_link: str = ""
    """The outside target of a symbolic link followed to reach it ("" for plain files)."""


@dataclass(frozen=True)
class Note:
    """An entry that is not read, and why."""

    source: str
    status: Literal["skipped", "failed"]
    reason: str


@dataclass
class Scan:
    files: list[Found] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan(
    target: Path,
    root: Path,
    supported: frozenset[str],
    limits: FileLimits,
    *,
    follow_symlinks: bool = False,
) -> Scan:
    """The files under ``target`` (a folder, or one file) to read, named relative to ``root``,
    in sorted order, and a note for every entry that is not read."""
    result = Scan()
    root_real = os.path.realpath(root)

    def source_of(path: Path) -> str:
        return path.relative_to(root).as_posix()

    def consider(path: Path, via_link: str) -> None:
        source = source_of(path)
        try:
            info = path.stat()
        except OSError as exc:
            result.notes.append(Note(source, "failed", f"cannot read: {exc.strerror}"))
            return
        if not stat.S_ISREG(info.st_mode):
            result.notes.append(
                Note(source, "skipped", f"{_kind(info.st_mode)}, not a file: not read")
            )
            return
        extension = path.suffix.lower()
        if extension not in supported:
            result.notes.append(
                Note(
                    source,
                    "skipped",
                    f"unsupported file type {path.suffix or '(none)'}; "
                    f"supported: {' '.join(sorted(supported))}"
                    + (f"; {hint}" if (hint := CONVERT_HINTS.get(extension)) else ""),
                )
            )
            return
        try:
            limits.check_size(extension, info.st_size)
        except DocumentError as exc:
            result.notes.append(Note(source, "failed", str(exc)))
            return
        result.files.append(Found(path, source, info.st_size, via_link))

    if not target.is_dir():
        consider(target, "")  # named explicitly: followed wherever it points
        return result

    visited: set[tuple[int, int]] = set()
    pending: list[tuple[Path, str]] = [(target, "")]  # folders to read, and the link that led there
    while pending:
        directory, via_link = pending.pop()
        info = directory.stat()
        if (info.st_dev, info.st_ino) in visited:  # a symlink loop or a second link to a folder
            result.notes.append(
                Note(
                    source_of(directory) + "/",
                    "skipped",
                    "folder already visited (symbolic link loop)",
                )
            )
            continue
        visited.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            result.notes.append(
                Note(source_of(directory) + "/", "failed", f"cannot list: {exc.strerror}")
            )
            continue
        folders: list[tuple[Path, str]] = []
        for entry in entries:
            path = Path(entry.path)
            source = source_of(path)
            is_dir = entry.is_dir()  # follows links
            shown = source + "/" if is_dir else source
            if entry.name.startswith("."):
                what = "folder" if is_dir else "file"
                result.notes.append(
                    Note(shown, "skipped", f"hidden {what} (its name starts with '.'): not read")
                )
                continue
            if entry.name.startswith("~$"):
                result.notes.append(Note(source, "skipped", "Office lock file: not read"))
                continue
            reached = via_link
            if entry.is_symlink():
                real = os.path.realpath(path)
                if not os.path.exists(real):
                    result.notes.append(
                        Note(source, "failed", "broken symbolic link (its target does not exist)")
                    )
                    continue
                if not _inside(real, root_real):
                    if not follow_symlinks:
                        result.notes.append(
                            Note(
                                shown,
                                "skipped",
                                f"symbolic link to {real}, outside the ingested folder: not "
                                "followed (follow_symlinks=True reads it)",
                            )
                        )
                        continue
                    reached = real
            if is_dir:
                folders.append((path, reached))
            else:
                consider(path, reached)
        pending.extend(reversed(folders))  # depth first, in name order
    return result


def _open_regular(path: Path) -> int:
    """A descriptor of ``path`` if it is a regular file; never blocks (a FIFO does not wait for a
    writer) and refuses what changed into something else since the scan."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DocumentError(
            f"{path.name}: file not found (moved or deleted since it was listed?); "
            f"check the path {path}"
        ) from None
    except PermissionError:
        raise DocumentError(
            f"{path.name}: permission denied; make it readable (e.g. chmod u+r) or run as a "
            "user who can read it"
        ) from None
    except IsADirectoryError:
        raise DocumentError(f"{path.name}: is a directory, not a file; ingest the folder") from None
    except OSError as exc:
        raise DocumentError(
            f"{path.name}: cannot read the file ({exc.strerror}); check the disk or network "
            "share and try again"
        ) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise DocumentError(f"{path.name}: is a directory, not a file; ingest the folder")
        raise DocumentError(f"{path.name}: {_kind(mode)}, not a file: not read")
    return fd


def _chunks(fd: int, name: str, max_bytes: int) -> Iterator[bytes]:
    total = 0
    try:
        while block := os.read(fd, _BLOCK):
            total += len(block)
            if total > max_bytes:
                raise DocumentError(
                    f"{name}: grew past {max_bytes / (1 << 20):.1f} MB while being read; "
                    "ingest it again once it is complete"
                )
            yield block
    except OSError as exc:
        raise DocumentError(
            f"{name}: cannot read the file ({exc.strerror}); check the disk or network share "
            "and try again"
        ) from None
    finally:
        os.close(fd)


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file, never more than ``max_bytes`` (:class:`DocumentError`
    otherwise, and for anything that is not a regular file)."""
    return b"".join(_chunks(_open_regular(path), path.name, max_bytes))


def hash_regular_file(path: Path, max_bytes: int) -> str:
    """SHA-256 of a regular file, read in blocks and never past ``max_bytes``."""
    digest = hashlib.sha256()
    for block in _chunks(_open_regular(path), path.name, max_bytes):
        digest.update(block)
    return digest.hexdigest()
