"""Cloud Storage behind the ``Storage`` protocol of chatbot/bucket/storage.py.

The client is google-cloud-storage, created once on first use. In the cloud it finds its
credentials through Application Default Credentials (the function's service account); when
``STORAGE_EMULATOR_HOST`` is set the library itself switches to that endpoint with anonymous
credentials and needs no project, which is how tests run it against fake-gcs-server.

Retries: reads, deletes and conditional writes (``if_generation_match`` set) use the
library's retry, bounded by ``retry_deadline``; an unconditional write is sent once, since
replaying it could overwrite a newer object.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.errors import ObjectNotFound, PreconditionFailed, StorageError
from chatbot.lazy import Lazy

if TYPE_CHECKING:
    from google.cloud import storage


CONNECT_TIMEOUT = 10.0
RESUMABLE_THRESHOLD = 8 * 1024 * 1024  # google-cloud-storage uploads larger objects resumably


class GCSStorage:
    """A bucket and a prefix; keys are relative to the prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        timeout: float = 60.0,
        retry_deadline: float = 120.0,
        client: storage.Client | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise StorageError(f"invalid bucket name: {bucket!r}")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self._timeout = (CONNECT_TIMEOUT, timeout)
        self._retry_deadline = retry_deadline
        self._bucket: Lazy[storage.Bucket] = Lazy(lambda: self._open_bucket(client))

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> GCSStorage:
        """Open ``gs://bucket/optional/prefix``."""
        if not uri.startswith("gs://"):
            raise StorageError(f"not a gs:// URI: {uri!r}")
        bucket, _, prefix = uri[len("gs://") :].partition("/")
        return cls(bucket, prefix, **kwargs)

    def _open_bucket(self, client: storage.Client | None) -> storage.Bucket:
        from google.cloud import storage

        with _mapped_errors(self.uri):
            client = client or storage.Client()
        return client.bucket(self.bucket_name)

    def _get_bucket(self) -> storage.Bucket:
        return self._bucket.get()

    def _name(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"invalid object key: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _retry(self, enabled: bool = True) -> Any:
        if not enabled:
            return None
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self._retry_deadline)

    def read(self, key: str) -> tuple[bytes, int]:
        """Return the object's bytes and generation; ObjectNotFound if absent."""
        blob = self._get_bucket().blob(self._name(key))
        with _mapped_errors(f"{self.uri}/{key}"):
            data = blob.download_as_bytes(timeout=self._timeout, retry=self._retry())
        return data, int(blob.generation)

    def download(self, key: str, dest: Path) -> int:
        """Stream the object into ``dest`` (replaced only once complete); return its generation."""
        dest = Path(dest)
        blob = self._get_bucket().blob(self._name(key))
        fd, partial = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        try:
            with _mapped_errors(f"{self.uri}/{key}"):
                blob.download_to_filename(partial, timeout=self._timeout, retry=self._retry())
            os.replace(partial, dest)
        finally:
            Path(partial).unlink(missing_ok=True)
        return int(blob.generation)

    def write(self, key: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Write the object and return its new generation; PreconditionFailed on a lost race."""
        return self._upload(
            key,
            len(data),
            lambda blob, **kw: blob.upload_from_string(data, **kw),
            if_generation_match,
        )

    def upload(self, key: str, src: Path, *, if_generation_match: int | None = None) -> int:
        """Upload a file; same contract as ``write``."""
        return self._upload(
            key,
            Path(src).stat().st_size,
            lambda blob, **kw: blob.upload_from_filename(str(src), **kw),
            if_generation_match,
        )

    def _upload(
        self,
        key: str,
        size: int,
        send: Callable[..., None],
        if_generation_match: int | None,
    ) -> int:
        if if_generation_match is not None and size > RESUMABLE_THRESHOLD:
            # A resumable upload is refused only once every byte is sent (and fake-gcs-server
            # does not check it at all: fsouza/fake-gcs-server#1967), so look first. The
            # server-side condition below still settles a race.
            current = self.generation(key) or 0
            if current != if_generation_match:
                raise PreconditionFailed(
                    f"{self.uri}/{key} is at generation {current}, expected {if_generation_match}"
                )
        blob = self._get_bucket().blob(self._name(key))
        with _mapped_errors(f"{self.uri}/{key}", writing=True):
            send(
                blob,
                content_type="application/octet-stream",
                if_generation_match=if_generation_match,
                timeout=self._timeout,
                retry=self._retry(enabled=if_generation_match is not None),
            )
        return int(blob.generation)

    def generation(self, key: str) -> int | None:
        """The object's current generation, or None if it does not exist."""
        with _mapped_errors(f"{self.uri}/{key}"):
            blob = self._get_bucket().get_blob(
                self._name(key), timeout=self._timeout, retry=self._retry()
            )
        return None if blob is None else int(blob.generation)

    def list(self, prefix: str) -> list[str]:
        """Keys under the folder ``prefix`` (relative to the store), sorted."""
        folder = "/".join(p for p in (self.prefix, prefix.strip("/")) if p)
        start = f"{folder}/" if folder else ""
        bucket = self._get_bucket()
        with _mapped_errors(f"{self.uri}/{prefix}"):
            names = [
                blob.name
                for blob in bucket.client.list_blobs(
                    bucket, prefix=start, timeout=self._timeout, retry=self._retry()
                )
            ]
        offset = len(f"{self.prefix}/") if self.prefix else 0
        return sorted(name[offset:] for name in names if not name.endswith("/"))

    def delete(self, key: str) -> None:
        """Delete the object if it exists."""
        blob = self._get_bucket().blob(self._name(key))
        try:
            with _mapped_errors(f"{self.uri}/{key}"):
                blob.delete(timeout=self._timeout, retry=self._retry())
        except ObjectNotFound:
            pass


@contextmanager
def _mapped_errors(where: str, *, writing: bool = False) -> Iterator[None]:
    """Turn google-cloud-storage, google-auth and HTTP errors into chatbot.errors types."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
    from requests import RequestException

    try:
        yield
    except api.NotFound as exc:
        if writing:  # an upload only 404s when the bucket itself is missing
            raise StorageError(f"cannot write {where}: the bucket does not exist") from exc
        raise ObjectNotFound(f"{where} does not exist") from exc
    except api.PreconditionFailed as exc:
        raise PreconditionFailed(f"{where} was changed by another writer") from exc
    except (
        api.GoogleAPIError,
        auth.GoogleAuthError,
        RequestException,
        DataCorruption,
        InvalidResponse,
    ) as exc:
        raise StorageError(f"{where}: {type(exc).__name__}: {exc}") from exc
