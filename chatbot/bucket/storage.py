"""Object storage for snapshots and control objects: a local folder or a Cloud Storage bucket.

Keys are relative to the store's prefix (``snapshots/v1.tar.zst``, ``LATEST``). Every object
has a generation number; writes can be made conditional on it (0 = must not exist yet), which
is how publishing stays safe when two writers race.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from chatbot.errors import ObjectNotFound, PreconditionFailed, StorageError


class Storage(Protocol):
    """What the indexer, the chat and the admin functions need from a bucket."""

    uri: str

    def read(self, key: str) -> tuple[bytes, int]:
        """Return the object's bytes and generation; ObjectNotFound if absent."""
        ...

    def download(self, key: str, dest: Path) -> int:
        """Stream the object into ``dest`` and return its generation."""
        ...

    def write(self, key: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Write the object and return its new generation; PreconditionFailed on a lost race."""
        ...

    def upload(self, key: str, src: Path, *, if_generation_match: int | None = None) -> int:
        """Upload a file; same contract as ``write``."""
        ...

    def generation(self, key: str) -> int | None:
        """The object's current generation, or None if it does not exist."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (relative to the store), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object if it exists."""
        ...


class LocalStorage:
    """A folder standing in for a bucket; generations are kept in a sidecar counter file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StorageError(f"object key escapes the store: {key!r}")
        return path

    def _gen_path(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(f".{path.name}.generation")

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def generation(self, key: str) -> int | None:
        if not self._path(key).is_file():
            return None
        try:
            return int(self._gen_path(key).read_text())
        except (FileNotFoundError, ValueError):
            return 1

    def read(self, key: str) -> tuple[bytes, int]:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"{self.uri}/{key} does not exist") from None
        return data, self.generation(key) or 1

    def download(self, key: str, dest: Path) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"{self.uri}/{key} does not exist")
        generation = self.generation(key) or 1
        shutil.copyfile(path, dest)
        return generation

    def write(self, key: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        with tempfile.NamedTemporaryFile(dir=self.root if self.root.exists() else None) as tmp:
            tmp.write(data)
            tmp.flush()
            return self.upload(key, Path(tmp.name), if_generation_match=if_generation_match)

    def upload(self, key: str, src: Path, *, if_generation_match: int | None = None) -> int:
        path = self._path(key)
        with self._locked():
            current = self.generation(key)
            if if_generation_match is not None and (current or 0) != if_generation_match:
                raise PreconditionFailed(
                    f"{self.uri}/{key} is at generation {current or 0}, "
                    f"expected {if_generation_match}"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_name(f".{path.name}.partial")
            shutil.copyfile(src, staged)
            os.replace(staged, path)
            new_generation = (current or 0) + 1
            self._gen_path(key).write_text(str(new_generation))
            return new_generation

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        with self._locked():
            self._path(key).unlink(missing_ok=True)
            self._gen_path(key).unlink(missing_ok=True)


def open_storage(uri: str, *, retry_deadline: float | None = None) -> Storage:
    """Open ``gs://bucket/prefix`` as Cloud Storage, anything else as a local folder.

    ``retry_deadline`` bounds the Cloud Storage client's own retries of one call, for callers
    that retry on their own terms (a chat instance's cold start, its background poll).
    """
    if uri.startswith("gs://"):
        from chatbot.bucket.gcs import GCSStorage

        options = {} if retry_deadline is None else {"retry_deadline": retry_deadline}
        return GCSStorage.from_uri(uri, **options)
    return LocalStorage(uri)
