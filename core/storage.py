"""One storage protocol, two backends: a local folder (the embedded default) and MinIO / S3 through `minio`.

Keys are ``/``-separated paths such as ``batches/week-48/reviews.parquet``. Writes are atomic: a local write goes
to a temporary file and is renamed into place; an object-store put is atomic per object. Multi-object units
(a batch) are committed by writing their manifest last, so a half-written unit never reads as valid.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from core.errors import NotFoundError, StorageError
from core.settings import Settings


@runtime_checkable
class Storage(Protocol):
    """What every backend offers."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def describe(self) -> str: ...

    def location(self, key: str) -> str:
        """Where a reader outside this process (a Spark executor) finds `key`: a file path or an ``s3://`` URL."""
        ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key {key!r}: expected a relative path without '..'")
    return key


class LocalStorage:
    """Objects as files under a root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            # "no space left on device writing .../reviews.parquet": the temporary file is gone, the key unchanged
            raise StorageError(f"{(err.strerror or str(err)).lower()} writing {path}") from err

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as err:
            raise NotFoundError(f"no object {key!r} in {self.describe()}") from err
        except OSError as err:
            raise StorageError(f"cannot read {path}: {err.strerror or err}") from err

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise StorageError(f"{(err.strerror or str(err)).lower()} deleting {path}") from err

    def describe(self) -> str:
        return f"local folder {self.root}"

    def location(self, key: str) -> str:
        return str(self._path(key))


class MinioStorage:
    """Objects in one bucket of a MinIO / S3 server; the bucket is created when missing."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        prefix: str = "",
    ) -> None:
        from minio import Minio
        from urllib3 import PoolManager, Retry, Timeout

        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # Few quick retries so an unreachable server is reported in seconds, not minutes.
        http = PoolManager(timeout=Timeout(connect=3, read=30), retries=Retry(total=1, backoff_factor=0.2))
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=http)
        self._ensure_bucket()

    def describe(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint}"

    def location(self, key: str) -> str:
        # Spark reads s3:// with the minio client on the executors (`core.spark.read`): no Hadoop jar needed.
        return f"s3://{self.bucket}/{self._name(key)}"

    def _error(self, action: str, err: Exception) -> StorageError:
        from minio.error import S3Error

        if isinstance(err, S3Error) and err.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            reason = f"the server refused the credentials ({err.code}); check WORKBENCH_MINIO_ACCESS_KEY/SECRET_KEY"
        elif isinstance(err, S3Error):
            reason = f"{err.code}: {err.message}"
        else:
            reason = f"server unreachable ({type(err).__name__}); is it running at {self.endpoint}?"
        return StorageError(f"{action} failed for {self.describe()}: {reason}")

    def _ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except Exception as err:  # minio raises S3Error, urllib3 errors and OSError
            raise self._error("opening the bucket", err) from err

    def _name(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(self.bucket, self._name(key), io.BytesIO(data), length=len(data))
        except Exception as err:
            raise self._error(f"writing {key!r}", err) from err

    def get_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, self._name(key))
        except S3Error as err:
            if err.code == "NoSuchKey":
                raise NotFoundError(f"no object {key!r} in {self.describe()}") from err
            raise self._error(f"reading {key!r}", err) from err
        except Exception as err:
            raise self._error(f"reading {key!r}", err) from err
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._name(key))
            return True
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject"):
                return False
            raise self._error(f"checking {key!r}", err) from err
        except Exception as err:
            raise self._error(f"checking {key!r}", err) from err

    def list(self, prefix: str = "") -> list[str]:
        if ".." in prefix.split("/"):
            raise StorageError(f"invalid storage prefix {prefix!r}: expected a relative path without '..'")
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        try:
            names = [obj.object_name for obj in self.client.list_objects(self.bucket, prefix=full, recursive=True)]
        except Exception as err:
            raise self._error("listing objects", err) from err
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(name[strip:] for name in names)

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, self._name(key))
        except Exception as err:
            raise self._error(f"deleting {key!r}", err) from err


def make_storage(settings: Settings) -> Storage:
    """The storage backend the settings choose."""
    if settings.storage_backend == "minio":
        return MinioStorage(
            endpoint=settings.minio_endpoint,
            access_key=settings.minio_access_key,
            secret_key=settings.minio_secret_key.get_secret_value(),
            bucket=settings.minio_bucket,
            secure=settings.minio_secure,
        )
    return LocalStorage(settings.home / "store")
