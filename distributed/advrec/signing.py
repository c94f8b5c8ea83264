"""Signatures on the state files advrec lets a library write and later unpickle.

Ray Tune restores a search (`advrec tune --resume`) by unpickling files of the experiment
directory (``tuner.pkl``, the searcher's and the trials' state, the trials' errors, and JSON
documents that embed cloudpickle), which would run any code a crafted directory holds. So Tune
writes that directory through `SigningHandler`, which signs each file as it is closed (an
HMAC-SHA256 of its name and bytes in ``<file>.advrec-hmac``, beside it, written at once, so a
search killed at any moment stays signed), under a per-user key kept outside every run
(``$XDG_CONFIG_HOME/advrec/key``, default ``~/.config/advrec/key``, created with mode 0600 on
first use). `verify` then refuses a directory holding a file this user's advrec did not sign,
or one changed since, before Ray reads any.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
from pyarrow import PythonFile
from pyarrow.fs import FSSpecHandler

from advrec import io
from advrec.errors import AdvrecError

SUFFIX = ".advrec-hmac"
"""A signature's file: the signed file's name with this suffix."""


def key_path() -> Path:
    """The per-user key file: ``$XDG_CONFIG_HOME/advrec/key`` (default ``~/.config``)."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(config) / "advrec" / "key"


@functools.cache
def _key(path: Path) -> bytes:
    """The user's key in ``path``, created (32 random bytes, mode 0600) the first time."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    if path.stat().st_mode & 0o077:  # a key others can read proves nothing
        raise AdvrecError(f"{path}: readable by other users; `chmod 600 {path}`")
    key = path.read_bytes()
    if len(key) < 32:
        raise AdvrecError(f"{path}: not an advrec key (under 32 bytes); delete it to make another")
    return key


def _hmac(path: str) -> hmac.HMAC:
    """The MAC of the file ``path``, to be fed its bytes: it signs the file's name too, so a
    signed file renamed (a signed ``params.pkl`` become ``tuner.pkl``) is not signed."""
    return hmac.new(_key(key_path()), path.rsplit("/", 1)[-1].encode() + b"\0", hashlib.sha256)


class _SigningWriter:
    """A file being written through fsspec, whose signature is written when it is closed."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self._fs, self._path = fs, path
        self._file = fs.open(path, "wb")
        self._mac = _hmac(path)

    def write(self, data: bytes) -> int:
        self._mac.update(data)
        return self._file.write(data)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            self._fs.pipe_file(self._path + SUFFIX, self._mac.hexdigest().encode())

    def __getattr__(self, name: str) -> Any:  # closed, flush, tell, ...: the file's own
        return getattr(self._file, name)


class SigningHandler(FSSpecHandler):
    """pyarrow's handler of an fsspec filesystem (for Ray's ``storage_filesystem``) that signs
    every file written through it, and keeps signatures with their files when Ray moves,
    copies or deletes them."""

    def open_output_stream(self, path: str, metadata: Any) -> PythonFile:
        return PythonFile(_SigningWriter(self.fs, path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> PythonFile:
        # an append is rewritten whole: its signature covers the whole file
        old = self.fs.cat_file(path) if self.fs.exists(path) else b""
        writer = _SigningWriter(self.fs, path)
        writer.write(old)
        return PythonFile(writer, mode="w")

    def move(self, src: str, dest: str) -> None:
        # the old name's signature is removed: under the new name it would not verify
        super().move(src, dest)
        self._drop(src)
        self.fs.pipe_file(dest + SUFFIX, _signature(self.fs, dest).encode())

    def copy_file(self, src: str, dest: str) -> None:
        super().copy_file(src, dest)
        self.fs.pipe_file(dest + SUFFIX, _signature(self.fs, dest).encode())

    def delete_file(self, path: str) -> None:
        super().delete_file(path)
        self._drop(path)

    def _drop(self, path: str) -> None:
        if self.fs.exists(path + SUFFIX):
            self.fs.rm_file(path + SUFFIX)


def _signature(fs: fsspec.AbstractFileSystem, path: str) -> str:
    mac = _hmac(path)
    mac.update(fs.cat_file(path))
    return mac.hexdigest()


def verify(directory: str, exempt: Callable[[str], bool]) -> None:
    """Raise a one-line `AdvrecError` naming the first file of ``directory`` that this user's
    advrec did not sign as it is now; but those that ``exempt`` (given the path relative to
    the directory) says no library unpickles."""
    fs, root = io.filesystem(directory)
    root = root.rstrip("/")
    for path in sorted(fs.find(root)):
        name = path[len(root) + 1:]
        if name.endswith(SUFFIX) or exempt(name):
            continue
        try:
            signed = fs.cat_file(path + SUFFIX).decode("ascii", "replace")
        except FileNotFoundError:
            signed = ""
        if not hmac.compare_digest(signed, _signature(fs, path)):
            raise AdvrecError(
                f"{io.join(directory, name)}: refused: not signed by this user's advrec key "
                f"({key_path()}), and unpickling it could run any code; advrec resumes only "
                f"searches it wrote itself")
