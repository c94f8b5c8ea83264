"""File access through fsspec: a local path and an ``s3://`` URL take the same code path.

Outputs are written atomically: everything goes to a temporary sibling first and is moved to
its final name only when complete, so a failed command leaves nothing half-written behind. An
output directory replaces only one that advrec wrote (`check_output`): never the user's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from advrec.errors import AdvrecError

# Object stores whose first path component is a bucket (or container) that must exist.
BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "abfs", "az")
# botocore's defaults retry a dead endpoint for about a minute: fail in seconds instead
S3_CLIENT = {"connect_timeout": 5, "read_timeout": 60,
             "retries": {"max_attempts": 3, "mode": "standard"}}
CHECK_TIMEOUT = "ADVREC_S3_CHECK_TIMEOUT"
"""The variable of the bucket check's connect and read timeouts, in seconds (default 5)."""


def storage_options(protocol: str) -> dict[str, Any]:
    """fsspec options for ``protocol``. S3: credentials come from the standard AWS chain
    (environment, ``~/.aws``, instance roles) through botocore; ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL`` (botocore's own variables) point it at MinIO, SeaweedFS, Ceph or R2."""
    if protocol not in ("s3", "s3a"):
        return {}
    options: dict[str, Any] = {"config_kwargs": S3_CLIENT}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Split a path or URL into its fsspec filesystem and the path inside it.

    On an object store the bucket is checked once per process, so a missing bucket, refused
    credentials or an unreachable endpoint is one clear error up front, not a hang or a trace
    from deep inside a read.
    """
    protocol = get_protocol(url)
    options = storage_options(protocol)
    try:
        fs, path = url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:  # unknown protocol or missing driver (e.g. s3fs)
        raise AdvrecError(f"{url}: cannot open this location ({exc})") from exc
    if protocol in BUCKET_PROTOCOLS:
        _check_bucket(_probe(fs, options), protocol, options.get("endpoint_url", ""),
                      path.split("/", 1)[0])
    return fs, path


def _probe(fs: fsspec.AbstractFileSystem, options: dict[str, Any]) -> fsspec.AbstractFileSystem:
    """A filesystem like ``fs`` for the bucket check only: on S3, one attempt (s3fs's retries
    and botocore's off) within ``ADVREC_S3_CHECK_TIMEOUT`` seconds to connect and as many to
    answer, so an endpoint that accepts connections and never answers is an error in seconds,
    where the client that moves data waits longer (`S3_CLIENT`) and retries."""
    if "config_kwargs" not in options:  # not S3
        return fs
    raw = os.environ.get(CHECK_TIMEOUT, "5")
    try:
        timeout = float(raw)
    except ValueError:
        timeout = float("nan")
    if not 0 < timeout < float("inf"):
        raise AdvrecError(f"{CHECK_TIMEOUT}={raw!r}: not a positive number of seconds")
    config = {"connect_timeout": timeout, "read_timeout": timeout,
              "retries": {"total_max_attempts": 1, "mode": "standard"}}
    probe = type(fs)(**{**options, "config_kwargs": config}, skip_instance_cache=True)
    probe.retries = 1  # s3fs's own retry loop around botocore's (a class attribute, 5)
    return probe


_reachable: set[tuple[str, str, str]] = set()


def _check_bucket(fs: fsspec.AbstractFileSystem, protocol: str, endpoint: str,
                  bucket: str) -> None:
    """Raise a one-line `AdvrecError` unless ``bucket`` exists and answers (cached once it does)."""
    key = (protocol, endpoint, bucket)
    if key in _reachable:
        return
    where = f"{protocol}://{bucket}" + (f" at {endpoint}" if endpoint else "")
    try:
        fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        raise AdvrecError(f"{where}: no such bucket") from None
    except PermissionError as exc:  # the message names the key id, never the secret
        raise AdvrecError(f"{where}: access denied; check the credentials (AWS_ACCESS_KEY_ID, "
                          f"AWS_PROFILE, ~/.aws): {exc}") from None
    # any other failure of this first call: the drivers' own connection errors (botocore's and
    # google's are not OSError), which only say the store cannot be reached
    except Exception as exc:  # noqa: BLE001
        raise AdvrecError(f"{where}: cannot reach the object store ({type(exc).__name__}: "
                          f"{exc})") from None
    _reachable.add(key)


def refuse_extension_types(schema: pa.Schema, where: str) -> None:
    """Raise a one-line `AdvrecError` when a column of a Parquet file's ``schema``, at any
    depth, has an extension type: Ray Data's ``ray.data.arrow_pickled_object`` (registered
    once Ray Data is imported, as training does) turns its values into Python objects by
    unpickling them, so a file handed to advrec could run code the moment one is read."""
    def extension(t: pa.DataType) -> bool:
        return isinstance(t, pa.BaseExtensionType) or any(
            extension(t.field(i).type) for i in range(t.num_fields))

    for field in schema:
        if extension(field.type):
            raise AdvrecError(f"{where}: column '{field.name}' has the extension type "
                              f"{field.type}; advrec reads plain numbers, strings and lists")


def absolute(url: str) -> str:
    """A local path made absolute (other processes resolve it the same way); URLs unchanged."""
    return url if "://" in url else os.path.abspath(url)


def join(base: str, *parts: str) -> str:
    """Join URL or path components with '/' (fsspec paths always use '/')."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def read_text(url: str) -> str:
    """The text of the file ``url``."""
    fs, path = filesystem(url)
    try:
        with fs.open(path, "r") as f:
            return f.read()
    except IsADirectoryError:
        raise AdvrecError(f"{url}: is a directory, not a file") from None


def read_json(url: str) -> Any:
    fs, path = filesystem(url)
    try:
        with fs.open(path, "r") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise AdvrecError(f"{url}: file not found") from exc
    except IsADirectoryError:
        raise AdvrecError(f"{url}: is a directory, not a file") from None
    except json.JSONDecodeError as exc:
        raise AdvrecError(f"{url}: not valid JSON ({exc})") from exc


def _json_text(obj: Any) -> str:
    """Indented, key-sorted JSON (sorted so the bytes are reproducible)."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_json(fs: fsspec.AbstractFileSystem, path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` on ``fs`` (inside an `atomic_dir`)."""
    with fs.open(path, "w") as f:
        f.write(_json_text(obj))


COPY_CHUNK = 1 << 24
"""Bytes a copy holds at once (16 MiB): a file is streamed, never read whole."""


def copy_files(source: str, names: Sequence[str], fs: fsspec.AbstractFileSystem,
               tmp: str) -> None:
    """Copy each of the files ``names`` that the directory ``source`` (a path or URL) holds into
    ``tmp`` on ``fs`` (inside an `atomic_dir`), unchanged, streamed in chunks."""
    source_fs, path = filesystem(source)
    for name in names:
        if source_fs.isfile(join(path, name)):
            with source_fs.open(join(path, name), "rb") as src, \
                    fs.open(join(tmp, name), "wb") as dst:
                shutil.copyfileobj(src, dst, COPY_CHUNK)


def dump_json(url: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``url`` atomically."""
    with atomic_file(url, "w") as f:
        f.write(_json_text(obj))


ROW_GROUP_ROWS = 1 << 20
"""Rows per Parquet row group: the unit a stream reads (``data.stream``), so a reader's memory
stays bounded however long the file."""


def write_parquet(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    """Write a Parquet file whose bytes depend only on the table (no timestamps; row groups of
    `ROW_GROUP_ROWS`)."""
    with fs.open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd",
                       row_group_size=min(max(table.num_rows, 1), ROW_GROUP_ROWS))


@dataclass(frozen=True)
class Marker:
    """What marks a directory as an output advrec wrote, which it may therefore replace: the
    JSON object in ``file`` has the key ``key``. ``what`` names such an output in errors."""

    file: str
    key: str
    what: str


def temporary(url: str) -> str:
    """A fresh sibling name of ``url`` to write into before the result takes ``url``'s place."""
    return f"{url.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"


def owned(url: str, marker: Marker) -> bool:
    """Whether the directory ``url`` is an output advrec wrote, as ``marker`` tells."""
    fs, path = filesystem(url)
    try:
        with fs.open(f"{path.rstrip('/')}/{marker.file}", "r") as f:
            content = json.load(f)
    except (OSError, ValueError):  # missing, unreadable or not JSON
        return False
    return isinstance(content, dict) and marker.key in content


def remove_owned(url: str, marker: Marker) -> None:
    """Delete the directory ``url`` if it is an output advrec wrote (``marker``); anything else
    there stays."""
    if owned(url, marker):
        fs, path = filesystem(url)
        fs.rm(path, recursive=True)


def is_local(url: str) -> bool:
    """Whether ``url`` is on a local disk (where links and renames are)."""
    return isinstance(filesystem(url)[0], LocalFileSystem)


def _location(url: str) -> tuple[str, str]:
    """``url``'s filesystem and path, a local one resolved (links, ``..``), for comparisons."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        return "file", os.path.realpath(path)
    return str(fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]), path.rstrip("/")


def _within(inner: tuple[str, str], outer: tuple[str, str]) -> bool:
    """Whether location ``inner`` is ``outer`` or lies under it."""
    return inner[0] == outer[0] and (inner[1] == outer[1]
                                     or inner[1].startswith(outer[1].rstrip("/") + "/"))


def check_output(url: str, marker: Marker, inputs: Sequence[str] = ()) -> None:
    """Raise a one-line `AdvrecError` unless advrec may write the directory ``url``: where
    nothing is, an empty directory, or an output advrec wrote (``marker``), which the new one
    replaces. Never a file, a directory of anything else, the working directory or one above
    it; never one of ``inputs``, one inside an input (it would be read as input next time) or
    one that holds an input (replacing it would delete the input)."""
    check_writable(url)
    where = _location(url)
    if where[0] == "file" and _within(_location(os.getcwd()), where):
        raise AdvrecError(f"{url}: holds the working directory, which advrec never replaces; "
                          "choose another output")
    check_apart(url, inputs)
    fs, path = filesystem(url)
    path = path.rstrip("/")
    if not fs.exists(path):
        check_file(url)  # nothing there: but not under a file either
        return
    if not fs.isdir(path):
        raise AdvrecError(f"{url}: is a file, not {marker.what}; advrec replaces only outputs "
                          "it wrote: choose another output or delete it")
    if fs.ls(path) and not owned(url, marker):
        raise AdvrecError(f"{url}: exists and is not {marker.what} (no advrec {marker.file}); "
                          "advrec replaces only outputs it wrote: choose another output or "
                          "delete it")


def check_apart(url: str, inputs: Sequence[str]) -> None:
    """An output must be apart from each of ``inputs``: not one of them, not inside one, not
    holding one."""
    where = _location(url)
    for source in inputs:
        place = _location(source)
        if _within(where, place) or _within(place, where):
            raise AdvrecError(f"{url}: overlaps the input {source}; the output must be apart "
                              "from it (neither inside the other)")


def check_parquet_output(url: str, key: str, what: str, inputs: Sequence[str] = ()) -> None:
    """A Parquet file advrec may write at ``url``: apart from its ``inputs``, and where nothing
    is or where a Parquet file is whose schema metadata has ``key`` (one advrec wrote, which
    the new one replaces); ``what`` names such a file in errors."""
    check_apart(url, inputs)
    check_file(url)
    fs, path = filesystem(url)
    if not fs.exists(path):
        return
    try:
        with fs.open(path, "rb") as f:
            metadata = pq.read_schema(f).metadata or {}
    except (pa.ArrowInvalid, OSError):
        metadata = {}
    if key.encode() not in metadata:
        raise AdvrecError(f"{url}: exists and is not {what}; advrec replaces only outputs it "
                          "wrote: choose another output or delete it")


@contextlib.contextmanager
def atomic_dir(url: str, marker: Marker) -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
    """Yield ``(fs, tmp_path)`` to fill (``marker``'s file last); on success ``tmp_path`` takes
    the place of ``url`` (`replace_tree`), on error it is removed. What is at ``url`` must be
    replaceable (`check_output`): that is checked before and again just before the swap."""
    check_output(url, marker)
    fs, final = filesystem(url)
    tmp = temporary(final)
    try:
        fs.makedirs(tmp, exist_ok=True)
        yield fs, tmp
        replace_tree(url, fs.unstrip_protocol(tmp), marker)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)
        raise


def replace_tree(url: str, new: str, marker: Marker) -> None:
    """Move the finished output ``new`` (a sibling directory) to ``url``, replacing what is
    there, which `check_output` must allow. On a local disk the old tree is renamed aside, the
    new one renamed into place and only then the old one deleted, so a failure leaves one of
    them whole at ``url``. Object stores have no rename: the old objects are deleted (the
    marker first) and the new ones copied (the marker last), so a reader never takes a partial
    output for a whole one."""
    check_output(url, marker)
    fs, final = filesystem(url)
    final = final.rstrip("/")
    src = filesystem(new)[1].rstrip("/")
    if isinstance(fs, LocalFileSystem):
        old = temporary(final) if fs.exists(final) else None
        if old:
            os.rename(final, old)
        try:
            os.rename(src, final)
        except BaseException:
            if old:
                os.rename(old, final)
            raise
        if old:
            fs.rm(old, recursive=True)
        return
    if fs.exists(final):
        if fs.exists(f"{final}/{marker.file}"):
            fs.rm(f"{final}/{marker.file}")
        fs.rm(final, recursive=True)
    for path in sorted(fs.find(src), key=lambda p: p == f"{src}/{marker.file}"):
        fs.copy(path, final + path[len(src):])
    fs.rm(src, recursive=True)


READ_ONLY = ("http", "https")
"""Protocols fsspec reads but advrec never writes to."""


def check_writable(url: str) -> None:
    """An output URL must be of a protocol that can be written (not http(s))."""
    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    if protocol in READ_ONLY:
        raise AdvrecError(f"{url}: {protocol} URLs are read-only; write to a path or an object "
                          "store (s3://, gs://, ...)")


def check_file(url: str) -> None:
    """Raise a one-line `AdvrecError` unless a file can be written at ``url``: not where a
    directory is (a rename would move the file into it), nor under a file."""
    check_writable(url)
    fs, path = filesystem(url)
    if fs.isdir(path):
        raise AdvrecError(f"{url}: is a directory; name a file")
    parent = path.rpartition("/")[0]
    while parent and not fs.exists(parent):
        parent = parent.rpartition("/")[0]
    if parent and not fs.isdir(parent):
        shown = parent if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(parent)
        raise AdvrecError(f"{url}: cannot be created, {shown} is a file")


@contextlib.contextmanager
def atomic_file(url: str, mode: str = "w") -> Iterator[Any]:
    """Open ``url`` for writing through a temporary name that is renamed into place on success
    (replacing a file there, never a directory: that is an error naming it)."""
    check_file(url)
    fs, final = filesystem(url)
    parent = final.rsplit("/", 1)[0] if "/" in final else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = temporary(final)
    try:
        with fs.open(tmp, mode) as f:
            yield f
        fs.mv(tmp, final)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
