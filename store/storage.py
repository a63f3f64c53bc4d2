"""Artifact storage: datasets, checkpoint archives and result files, by key.

`ArtifactStorage` is the interface (an object store can implement it); `LocalStorage`, a
folder, is the default. Keys are relative slash-separated paths that we build ourselves;
anything else (absolute, `..`, backslashes) is refused, so no key can leave the root. Writes
are atomic: a temporary file renamed into place, so a reader never sees half an object.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"^[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+)*$")
CHUNK = 1024 * 1024


class StorageKeyError(ValueError):
    """A key that could escape the storage root."""


def check_key(key: str) -> str:
    """`key` if it is a safe relative path, else StorageKeyError."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise StorageKeyError(f"invalid storage key {key!r}")
    return key


class ArtifactStorage(Protocol):
    """Where the service keeps its artifacts."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (replacing any object there)."""

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key`."""

    def open(self, key: str) -> BinaryIO:
        """A binary reader of the object (FileNotFoundError if absent)."""

    def size(self, key: str) -> int:
        """The object's size in bytes."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    def delete(self, key: str) -> None:
        """Remove the object (no error if absent)."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix/`."""


class LocalStorage:
    """Artifact storage in a local folder (the default; a shared volume in compose)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """The file that holds `key`."""
        return self.root / check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        folder = self.path(prefix)
        if folder.is_dir():
            for item in sorted(folder.rglob("*"), reverse=True):
                item.unlink() if not item.is_dir() else item.rmdir()
            folder.rmdir()


def archive_directory(source: Path, target: Path, *, exclude: Collection[str] = (),
                      extra: Mapping[str, bytes] | None = None) -> tuple[int, str]:
    """Write `source`'s files as an uncompressed tar at `target`: members relative to
    `source` (`/`-separated), but those whose relative path is in `exclude`, plus the `extra`
    members written from bytes; sorted by name. Returns (size, sha256).

    A member keeps its file's mtime, an `extra` one the time of writing, so that unpacked
    files are dated when they were written, not 1970 (issue 19); owners are blanked."""
    files = {item.relative_to(source).as_posix(): item for item in source.rglob("*")
             if item.is_file()}
    members: dict[str, Path | bytes] = {name: path for name, path in files.items()
                                        if name not in exclude}
    members.update(extra or {})
    now = int(time.time())
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            member = members[name]
            if isinstance(member, bytes):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(member), now, 0o644
                _add_member(tar, info, io.BytesIO(member))
            else:
                with open(member, "rb") as fh:
                    _add_member(tar, tar.gettarinfo(str(member), arcname=name), fh)
    return target.stat().st_size, file_sha256(target)


def _add_member(tar: tarfile.TarFile, info: tarfile.TarInfo, reader: BinaryIO) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, reader)


def extract_archive(archive: Path, target: Path) -> None:
    """Unpack a checkpoint archive into `target`, refusing members that would leave it."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r") as tar:
        tar.extractall(target, filter="data")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iter_range(reader: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    """Yield `length` bytes of `reader` from `start`, in chunks; closes the reader."""
    try:
        reader.seek(start)
        left = length
        while left > 0:
            chunk = reader.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        reader.close()
