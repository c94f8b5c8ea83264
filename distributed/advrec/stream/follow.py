"""Following a prefix (`advrec stream --follow`): the Parquet files that land under a local
directory or an object-store prefix, taken as they appear, each partition's new files one window.

A file is taken once it is listed: an object store shows an object only once it is whole, and a
local writer should write under a hidden or ``_`` name and rename (`parquet_files` skips those).
The files of a partition directory (``dt=2026-12-01/``) found in one listing make one window,
named by the partition's values (``2026-12-01``); files at the top of the prefix (or a single
file followed), by their own names; a partition that receives files again later gives a window
named ``NAME+1``, ``NAME+2``...
Each window reads back the files of the windows before it (their rows stay known, in the order
they landed), so a stream's memory and reading grow with the log it has followed.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pyarrow as pa

from advrec.data.readers import ColumnMap
from advrec.data.readers.parquet_log import parquet_files, read_parquet
from advrec.io import filesystem
from advrec.stream.log import StreamLog
from advrec.stream.windows import Window


def new_windows(source: str, taken: list[list[str]],
                names: set[str]) -> list[tuple[str, list[str]]]:
    """The windows of the files under ``source`` that no window of ``taken`` holds: (name, its
    files), in the order of their names; a name already in ``names`` (an earlier window's, or
    another partition's of this listing that sanitises to the same) gets a ``+K`` suffix (the
    new names are added to ``names``)."""
    seen = {f for files in taken for f in files}
    root = filesystem(source)[1].rstrip("/")
    groups: dict[str, list[str]] = {}
    for file in parquet_files(source):
        if file not in seen:
            groups.setdefault(_partition(root, file), []).append(file)
    windows = []
    for name, key in sorted((_name(key), key) for key in groups):
        unique, k = name, 1
        while unique in names:
            unique, k = f"{name}+{k}", k + 1
        names.add(unique)
        windows.append((unique, groups[key]))
    return windows


MAX_NAME = 128
"""The longest window name: a directory name (255 bytes at most) that leaves room for the
suffixes of a re-landed partition (``+K``) and of an atomic write's temporary sibling; a longer
one keeps its first characters and a digest of the whole partition."""


def _partition(root: str, file: str) -> str:
    """The partition of ``file`` under ``root``: its directories' path with a trailing ``/``
    (``dt=2026-12-01/h=06/``), or for a file at the top (or ``root`` itself, a single file) its
    name."""
    if file == root:
        return file.rsplit("/", 1)[-1]
    *dirs, base = file[len(root) + 1:].split("/")
    return "".join(f"{d}/" for d in dirs) or base


def _name(partition: str) -> str:
    """The window name of a `_partition`: a directory's partition values joined
    (``dt=2026-12-01/h=06/`` gives ``2026-12-01-06``), a file's name without ``.parquet``;
    characters unfit for a directory name become ``_``, and so do the names ``.`` and ``..``
    (``dt=..`` would name the stream's own directory)."""
    if partition.endswith("/"):
        name = "-".join(d.partition("=")[2] or d for d in partition[:-1].split("/"))
    else:
        name = partition.removesuffix(".parquet")
    name = re.sub(r"[^A-Za-z0-9._+=-]", "_", name)
    if len(name) > MAX_NAME:  # a legal partition name, too long once a suffix is added
        digest = hashlib.sha256(partition.encode()).hexdigest()[:16]
        name = f"{name[:MAX_NAME - 17]}-{digest}"
    return "_" * max(len(name), 1) if name in ("", ".", "..") else name


def window_log(source: str, taken: list[list[str]], name: str,
               min_rating: float | None) -> tuple[StreamLog, Window]:
    """The log of every window's files, the last of ``taken`` being window ``name``'s, in the
    order they landed, and that window."""
    tables = [read_parquet(source, ColumnMap(), files, empty=True) for files in taken]
    batch = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    log = StreamLog.of(pa.concat_tables(tables, promote_options="permissive"), source,
                       "parquet", min_rating, batch)
    return log, log.batch_window(len(taken) - 1, name)
