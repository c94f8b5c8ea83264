"""Turn ``data.source`` into a prepared dataset: use it as is, or prepare it into a cache.

``advrec train`` accepts a raw log as well as a prepared dataset. A raw log is prepared once into
``<cache_dir>/<key>``, where the key hashes the source, its files' identities (name, size and
ETag or modification time, of every file under a directory or prefix) and every option that
changes the output.
"""

from __future__ import annotations

import hashlib
import json
import os

from advrec import io
from advrec.config import DataConfig
from advrec.data.dataset import is_prepared
from advrec.data.prepare import prepare
from advrec.data.readers import ColumnMap
from advrec.errors import AdvrecError

MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
CACHE_VERSION = 2
"""Part of every cache key: bump it when `prepare` writes something new for the same input
(2: MovieLens side features), so older cached datasets are prepared again."""


def detect_format(source: str) -> str:
    """Guess the input format of a raw log from its name or the files in it."""
    fs, path = io.filesystem(source)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(".zip") or name in MOVIELENS_FILES:
        return "movielens"
    if not fs.exists(path):
        raise AdvrecError(f"{source}: file not found")
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)] if fs.isdir(path) else [name]
    for fmt, test in (
        ("movielens", lambda n: n in MOVIELENS_FILES),
        ("recbole", lambda n: n.endswith(".inter")),
        ("parquet", lambda n: n.endswith(".parquet")),
        ("csv", lambda n: n.endswith(".csv")),
        ("sasrec", lambda n: n.endswith(".txt")),
    ):
        if any(test(n) for n in names):
            return fmt
    if fs.isdir(path) and any(fs.isdir(p) for p in fs.ls(path, detail=False)):
        # a partitioned log (dt=.../): its first partition's files tell (as a URL on an object
        # store: fsspec lists its paths without their protocol)
        part = next(p for p in fs.ls(path, detail=False) if fs.isdir(p))
        return detect_format(part if io.is_local(source) else fs.unstrip_protocol(part))
    raise AdvrecError(f"{source}: cannot tell the log's format; set data.format")


def _identity(source: str) -> str:
    """Every file of the source (one file, or all under a directory or object-store prefix) by
    its name, size and version (ETag, else modification time), hashed: an edit in place of
    ``dir/u.data`` changes neither the directory's own mtime nor its size, and a prefix has
    neither, so the cache must see the files themselves. '' when the source cannot be listed
    (`prepare` then names the problem)."""
    fs, path = io.filesystem(source)
    fs.invalidate_cache(path)  # an object store's listings, cached by an earlier look, are stale
    try:
        if fs.isdir(path):
            files = fs.find(path, detail=True)
        else:
            files = {path: fs.info(path)}
    except (FileNotFoundError, OSError):
        return ""
    versions = sorted(
        (name[len(path):], info.get("size"),
         str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""))
        for name, info in files.items())
    return hashlib.sha256(json.dumps(versions).encode()).hexdigest()


def buckets(users: int, items: int) -> dict[str, int]:
    """`prepare`'s ``buckets`` from the two options (0: a row per id)."""
    return {kind: n for kind, n in (("user", users), ("item", items)) if n}


def resolve_dataset(cfg: DataConfig) -> str:
    """The URL of a prepared dataset for ``cfg``, preparing the raw log first if needed; a
    local path is made absolute (a run records it, and its Ray workers, a resumed run and a
    warm start elsewhere read it from other working directories)."""
    # A prepared dataset is used as it is, whatever raw format the config names: the shipped
    # configs name their log's (movielens), and a dataset poisoned or cleaned from it is prepared.
    if cfg.format == "prepared" or is_prepared(cfg.source):
        if not is_prepared(cfg.source):
            raise AdvrecError(f"data.source: {cfg.source} is not a prepared dataset (no meta.json)")
        return io.absolute(cfg.source)
    fmt = detect_format(cfg.source) if cfg.format == "auto" else cfg.format
    options = {"version": CACHE_VERSION, "source": cfg.source, "identity": _identity(cfg.source), "format": fmt,
               "split": cfg.split, "min_rating": cfg.min_rating, "kcore": cfg.kcore, "seed": cfg.seed,
               "label_threshold": cfg.label_threshold}
    # Only when set, so the keys of datasets prepared without them (the same bytes) stay valid.
    for key in ("label_column", "user_features", "item_features", "user_buckets",
                "item_buckets"):
        if getattr(cfg, key):
            options[key] = getattr(cfg, key)
    columns = ColumnMap(label=cfg.label_column, user_features=tuple(cfg.user_features),
                        item_features=tuple(cfg.item_features))
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    cache = cfg.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "advrec", "datasets")
    url = io.absolute(io.join(cache, key))
    if not is_prepared(url):
        prepare(cfg.source, fmt, url, split=cfg.split, min_rating=cfg.min_rating, kcore=cfg.kcore,
                seed=cfg.seed, label_threshold=cfg.label_threshold, columns=columns,
                buckets=buckets(cfg.user_buckets, cfg.item_buckets))
    return url
