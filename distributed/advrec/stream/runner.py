"""`advrec stream`: train window after window of a log, evaluating each window's model on the
next window before training on it (prequential), and publishing every window's model.

The stream directory::

    DIR/stream.json            what the stream is (source, window, update, replay, expiry):
                               the marker
    DIR/.lock                  held by the one stream writing the directory (a local disk)
    DIR/config.yaml            its resolved run config, the same for every window
    DIR/data/<window>/         the window's prepared dataset (`StreamLog.write_window`)
    DIR/windows/<window>/      the window's run (`advrec train`'s run directory): its model
    DIR/latest                 a link to the newest published window, swapped atomically
    DIR/latest.json            the same, as a file (where links are not: object storage)
    DIR/stream_history.json    one record per window, written after the window is published
    DIR/stream_history.png     the prequential metrics and training time per window
    DIR/ray_train/             on Ray Train workers: the experiment state of the one worker
                               group that trains every window (`advrec.train.pool`)

The windows are a log's spans or counts of rows, replayed (`advrec.stream.windows`), or the
partitions landing under a prefix (`advrec.stream.follow`). For each window, in order: write its
dataset; evaluate the model published so far on the window
(`StreamLog.prequential`, in the window's numbering: `advrec.train.warm.warm_model`); train
(``incremental``: from the last window's model, `train.init_from`; ``retrain``: from scratch on
every row so far; ``frozen``: the first window only); publish (`publish`); record it; prune to
the newest ``keep`` windows. A stream stopped anywhere resumes at the first window its history
lacks: what that window had written is removed and written again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from advrec import __version__, io
from advrec.config import RunConfig, TuneConfig
from advrec.config.load import build_config, dump_config
from advrec.data.dataset import is_prepared, load_dataset, read_part
from advrec.data.prepare import DATASET
from advrec.data.source import detect_format
from advrec.errors import AdvrecError, shown
from advrec.metrics.plots import plot_stream
from advrec.metrics.robustness import attack_batches, attacked_metrics, robust_attack
from advrec.stream.follow import new_windows, window_log
from advrec.stream.log import UPDATES, StreamLog
from advrec.stream.windows import Window, cut, parse_window
from advrec.train.driver import RUN, run_training
from advrec.train.pool import WorkerGroup
from advrec.train.tasks import make_loss, make_task
from advrec.train.warm import warm_model

STREAM = io.Marker("stream.json", "advrec_stream", "an advrec stream")
"""What marks a directory as a stream `run_stream` wrote."""
HISTORY = "stream_history.json"
POLL_S = 60.0
"""Seconds between a followed prefix's listings, by default."""
FOLLOW = "partitions"
"""The ``window`` setting of a stream that follows a prefix: each new partition a window."""


def run_stream(cfg: RunConfig, output: str, window: str | None, update: str = "incremental",
               replay: int = 0, keep: int = 0, progress: bool = True,
               address: str | None = None, follow: bool = False, poll: float | None = None,
               idle: float | None = None, expire: int = 0) -> list[dict[str, Any]]:
    """Stream ``cfg.data.source`` into the stream directory ``output`` (see the module): in
    windows of ``window`` (`parse_window`), or with ``follow`` each new partition of the prefix
    (`advrec.stream.follow`), listed every ``poll`` seconds until ``idle`` seconds pass without
    one (None: until stopped); ``poll`` None: `POLL_S`. Returns the history, one record per
    window.

    ``update``: one of `UPDATES`; ``replay``: older rows each incremental window also trains
    on; ``keep``: the published windows kept (0: all); ``expire``: an incremental stream's
    tables free the rows of ids unseen for that many windows (0: never). A directory holding a
    stream with the same settings and config continues it; other settings are an error naming
    them.
    """
    if follow == (window is not None):
        raise AdvrecError("give --window to replay a log, or --follow to follow a prefix "
                          "(its partitions are the windows), not both nor neither")
    spec = parse_window(window) if window is not None else None
    _check(cfg, update, replay, keep, expire)
    for flag, value in (("--poll", poll), ("--idle", idle)):
        if value is not None and not follow:
            raise AdvrecError(f"{flag}: applies to --follow only (a replayed log's windows are "
                              "all there)")
        if value is not None and not (0 < value < float("inf")):
            raise AdvrecError(f"{flag} must be a positive number of seconds, not {value}")
    poll = POLL_S if poll is None else poll
    output = io.absolute(output)
    if not cfg.data.source.strip():
        raise AdvrecError("data.source: empty; name the log to stream")
    if cfg.data.format == "prepared":
        raise AdvrecError("data.format=prepared: a stream replays a raw log in time order, not "
                          "a prepared dataset (give the log's own format, or auto)")
    # as a run records it: the same log however it was written (./log, /abs/log) continues
    source = io.absolute(cfg.data.source)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": source})})
    if is_prepared(source):
        raise AdvrecError(f"data.source: {source} is a prepared dataset; a stream replays a raw "
                          "log in time order (give the log itself)")
    fmt = detect_format(source) if cfg.data.format == "auto" else cfg.data.format
    if follow and fmt != "parquet":
        raise AdvrecError(f"--follow takes the Parquet files landing under a prefix; "
                          f"{source} is a {fmt} log (data.format)")
    settings = {"source": source, "format": fmt,
                "window": spec.text if spec else FOLLOW, "update": update, "replay": replay,
                "expire_after": expire}
    config = dump_config(cfg)
    # a key a window's run refuses fails now, before anything is written
    for init in (None, io.join(output, "windows", "_"))[:2 if update == "incremental" else 1]:
        window_config(cfg, io.join(output, "data", "_"), init)
    io.check_output(output, STREAM, inputs=(source,))
    history = _continued(output, settings, config)
    stream = _Stream(cfg, output, update, replay, keep, expire, progress, address,
                     history or [])
    if spec is None:  # the first listing fails (a missing prefix) before any write
        first = new_windows(source, [r["files"] for r in stream.history],
                            {r["window"] for r in stream.history})
    else:
        log = StreamLog.read(source, fmt, cfg.data.min_rating)  # a bad log fails now too
        if spec.seconds and not log.timed:
            raise AdvrecError(f"{source}: has no timestamp column, so no time windows; give "
                              "--window N (rows, in the log's order)")
        try:
            windows, empty = cut(log.timestamp, spec)
        except AdvrecError as exc:
            raise AdvrecError(f"{source}: {exc}") from None
    with _locked(output), _worker_group(cfg, address, output) as group:
        stream.group = group
        _check_latest(output)
        # decided again under the lock: a stream that ended meanwhile may have finished windows
        if _continued(output, settings, config) != history:
            raise AdvrecError(f"{output}: another stream wrote it while this one started; run "
                              "the command again")
        if history is None:
            _clear(output)  # what an earlier stream that finished no window left
            with io.atomic_file(io.join(output, "config.yaml")) as f:
                f.write(config)
            io.dump_json(io.join(output, STREAM.file), {STREAM.key: __version__, **settings})
        if spec is None:
            _follow(stream, source, first, poll, idle)
        else:
            _replay(stream, log, windows, empty, spec.text, source)
    return stream.history


def _worker_group(cfg: RunConfig, address: str | None,
                  output: str) -> contextlib.AbstractContextManager[WorkerGroup | None]:
    """The Ray Train workers that train every window of a stream on ``scaling.num_workers``
    workers, started once (their experiment state in ``output/ray_train``); none in-process or
    with ``data.stream`` (a Ray Data stream is given to a group as it starts)."""
    if not cfg.scaling.num_workers or cfg.data.stream:
        return contextlib.nullcontext()
    return WorkerGroup(cfg.scaling, address, io.join(output, "ray_train"))


@contextlib.contextmanager
def _locked(output: str) -> Iterator[None]:
    """Hold the stream directory ``output`` (on a local disk: an exclusive lock on its
    ``.lock`` file, released when the process ends however it ends); a second stream writing
    into it at the same time is an error. Object storage has no such lock."""
    if not io.is_local(output):
        yield
        return
    path = io.filesystem(output)[1]
    created = not os.path.exists(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:  # a read-only place, a full disk, a name too long
        raise AdvrecError(f"{output}: cannot be created ({exc.strerror})") from None
    lock_path = os.path.join(path, ".lock")
    try:
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AdvrecError(f"{output}: another advrec stream is writing it; wait for "
                                  "that one to end, or stop it") from None
            yield
    finally:
        # a stream that ended before writing anything (an interrupt, a failed start) leaves
        # no directory holding only its lock, which a rerun would take for someone else's
        if created and os.listdir(path) == [".lock"]:
            os.remove(lock_path)
            os.rmdir(path)


def _replay(stream: _Stream, log: StreamLog, windows: list[Window], empty: list[str],
            window: str, source: str) -> None:
    """Take the windows of a replayed log that the stream has not taken yet, in order."""
    if empty:
        _warn(f"--window {window} leaves {len(empty)} span{'s' if len(empty) > 1 else ''} "
              f"of {source} without interactions, skipped: {', '.join(empty[:5])}"
              f"{' ...' if len(empty) > 5 else ''}")
    done = {record["window"]: record for record in stream.history}
    for w in windows:
        if w.name in done and done[w.name]["rows"] != w.stop - w.start:
            _warn(f"window {w.name} now has {w.stop - w.start} interactions, "
                  f"{done[w.name]['rows']} when it was trained: the stream does not train it "
                  "again (a log that grows is followed: --follow)")
    bar = tqdm(windows, desc=f"stream {stream.cfg.model.name}/{stream.update}", unit="window",
               disable=None if stream.progress else True)
    for i, w in enumerate(bar):
        if w.name not in done:
            stream.advance(log, w, [x.start for x in windows[:i + 1]], bar.disable)


def _warn(message: str) -> None:
    print(f"advrec: warning: {message}", file=sys.stderr, flush=True)


@dataclass
class _Stream:
    """A stream under way: what it was given, and its history so far."""

    cfg: RunConfig
    output: str
    update: str
    replay: int
    keep: int
    expire: int
    progress: bool
    address: str | None
    history: list[dict[str, Any]]
    group: WorkerGroup | None = None  # the workers that train every window, if any

    @property
    def model(self) -> str | None:
        """The window whose model is published, if any."""
        return self.history[-1]["model"] if self.history else None

    def advance(self, log: StreamLog, w: Window, starts: list[int], quiet_bar: bool,
                found: float | None = None, **extra: Any) -> None:
        """Evaluate, train and publish window ``w`` of ``log``, the last of the windows that
        begin at rows ``starts``; record it (with ``extra``: a followed window's files; with
        ``found``, the `time.monotonic` of the listing that found it, the seconds from there to
        its publication, ``latency_s``) and prune. A window without rows is recorded as
        skipped."""
        if w.stop == w.start:
            _warn(f"window {w.name} has no interactions (none that are not repeats): skipped")
            record = {"window": w.name, "rows": 0, "skipped": True, "model": self.model}
        else:
            # the tables hold the ids of the last `expire` windows; the model to evaluate, those
            # of the `expire` windows before this one
            last = len(starts) - 1
            held = (starts[max(last - self.expire + 1, 0)], starts[max(last - self.expire, 0)]
                    ) if self.expire else (0, 0)
            record = _window(self.cfg, log, w, self.output, self.update, self.replay,
                             self.model, self.address, held, self.group)
        if found is not None:
            record["latency_s"] = time.monotonic() - found
        self.history.append({**record, **extra})
        io.dump_json(io.join(self.output, HISTORY), self.history)
        _plot(self.output, self.history, self.cfg)
        if self.keep:
            _prune(self.output, self.history, self.keep)
        if self.progress and quiet_bar:  # no terminal: a line a window (a log file, a Ray job)
            print(_line(record, self.cfg), flush=True)


def _follow(stream: _Stream, source: str, found: list[tuple[str, list[str]]], poll: float,
            idle: float | None) -> None:
    """Take the windows ``found``, then list ``source`` every ``poll`` seconds and take each
    new partition, until ``idle`` seconds pass without one."""
    names = {r["window"] for r in stream.history} | {name for name, _ in found}
    last = listed = time.monotonic()
    while True:
        for name, files in found:
            taken = [*(r["files"] for r in stream.history), files]
            log, w = window_log(source, taken, name, stream.cfg.data.min_rating)
            starts = [log.batch_window(k, "").start for k in range(len(taken))]
            stream.advance(log, w, starts, True, listed, files=files)
            last = time.monotonic()
        if idle is not None and time.monotonic() - last >= idle:
            return
        time.sleep(poll if idle is None else min(poll, max(idle - (time.monotonic() - last),
                                                           0.0)))
        listed = time.monotonic()
        found = new_windows(source, [r["files"] for r in stream.history], names)


def _check(cfg: RunConfig, update: str, replay: int, keep: int, expire: int) -> None:
    """Refuse, in one line, what a stream cannot do (before the log is read)."""
    if update not in UPDATES:
        raise AdvrecError(f"--update: '{update}' is not one of {', '.join(UPDATES)}")
    if expire and update != "incremental":
        raise AdvrecError(f"--expire-after: only an incremental stream's tables free rows (a "
                          f"retrain starts afresh, a frozen model never changes), not "
                          f"--update {update}")
    for flag, value in (("--replay", replay), ("--keep", keep), ("--expire-after", expire)):
        if value < 0:
            raise AdvrecError(f"{flag} must be >= 0, not {value}")
    if replay and update != "incremental":
        raise AdvrecError(f"--replay: only an incremental stream replays older rows (a retrain "
                          f"trains on all of them, a frozen one on none), not --update {update}")
    if cfg.train.init_from:
        raise AdvrecError(f"train.init_from={shown(cfg.train.init_from)}: a stream's first "
                          "window trains from scratch and each later one warm-starts from the "
                          "window before (--update incremental); give no train.init_from")
    if cfg.adv.schedule == "fast" and cfg.adv.guard:
        raise AdvrecError(f"adv.guard={cfg.adv.guard}: schedule=fast's guard watches robust "
                          "metrics on validation rows, which a stream's windows have none of "
                          "(the prequential evaluation measures a stream); set adv.guard=0")
    for key, adversary in cfg.adv.adversaries():
        if adversary.method == "jsma-fields":
            raise AdvrecError(f"{key}.method=jsma-fields: a stream trains on the log's "
                              "interactions, which have no feature fields to change")
    if cfg.kind != "ranking":
        raise AdvrecError(f"model.name={cfg.model.name}: a stream trains ranking models (mf, "
                          "neumf, twotower, sasrec) on the log's interactions; CTR and "
                          "multi-task models are not streamed yet")
    data = cfg.data
    for key, value in (("label_column", data.label_column), ("label_threshold",
                       data.label_threshold), ("user_features", data.user_features),
                       ("item_features", data.item_features), ("user_buckets",
                       data.user_buckets), ("item_buckets", data.item_buckets),
                       ("kcore", data.kcore > 1), ("targets", cfg.eval.targets)):
        if value:
            section = "eval" if key == "targets" else "data"
            raise AdvrecError(f"{section}.{key}: a stream does not take it yet (it numbers "
                              "every id it meets and trains on each window's interactions)")


def _continued(output: str, settings: dict[str, Any],
               config: str) -> list[dict[str, Any]] | None:
    """The history so far of the stream in ``output`` (which `io.check_output` allows), which
    continues (the same ``settings`` and ``config`` only), or None where a new stream may
    start: nothing there, or on a local disk a stream that finished no window (its first
    failed; the lock tells a running one)."""
    marker = io.join(output, STREAM.file)
    if not io.exists(marker):
        return None
    finished = io.exists(io.join(output, HISTORY)) and io.read_json(io.join(output, HISTORY))
    saved = io.read_json(marker)
    differs = [f"a stream with {key} {saved.get(key)!r}, not {value!r}; continue it with its "
               "own settings" for key, value in settings.items() if saved.get(key) != value]
    if not differs and io.read_text(io.join(output, "config.yaml")) != config:
        differs = ["a stream of another config (its config.yaml); continue it with that one"]
    if not differs:
        return finished or []
    if not finished and io.is_local(output):
        return None
    raise AdvrecError(f"{output}: holds {differs[0]}, or write this one elsewhere")


def _clear(output: str) -> None:
    """Remove what a stream that finished no window left in the local directory ``output``:
    its windows' datasets and runs (each only a directory of ``output``'s own, not a link, that
    advrec's marker says it wrote), its empty history and the published link. On object
    storage there is nothing to clear (`_continued` replaces no stream there), and the
    bucket's path must never be taken for a local one."""
    if not io.is_local(output):
        return
    root = io.filesystem(output)[1]
    for part, marker in (("data", DATASET), ("windows", RUN)):
        path = os.path.join(root, part)
        if os.path.isdir(path) and not os.path.islink(path):
            for child in os.listdir(path):
                if not os.path.islink(os.path.join(path, child)):
                    io.remove_owned(io.join(output, part, child), marker)
    for name in (HISTORY, "stream_history.png"):
        if os.path.isfile(os.path.join(root, name)):
            os.remove(os.path.join(root, name))
    publish(output, None)


def _check_latest(output: str) -> None:
    """``output/latest`` must be the stream's own link to its published window, and
    ``output/latest.json`` a file, or nothing: anything else there is not advrec's to
    replace."""
    named = io.join(output, "latest.json")
    fs, path = io.filesystem(named)
    if fs.isdir(path):
        raise AdvrecError(f"{named}: is a directory, where a stream names its newest window "
                          "(advrec never replaces what it did not write); move it away")
    if not io.is_local(output):
        return
    link = os.path.join(io.filesystem(output)[1], "latest")
    if os.path.lexists(link) and not os.path.islink(link):
        raise AdvrecError(f"{link}: is not the link a stream publishes its newest window by "
                          "(advrec never replaces what it did not write); move it away")


def window_config(cfg: RunConfig, data_url: str, init: str | None) -> RunConfig:
    """The run config of a window of a stream of ``cfg``: trained on the prepared dataset
    ``data_url``, from the published run ``init`` (an incremental window after the first) or
    from scratch (None), validated as a whole (a stream's keys that a window's run refuses
    fail here, in one line)."""
    wcfg = cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"source": data_url, "format": "prepared"}),
        "train": cfg.train.model_copy(update={"init_from": init}),
        # adv.start_epoch is a clean warm-up (APR's pre-training) of a model trained from
        # scratch; a window that continues the last one's model is adversarial from the start
        "adv": cfg.adv.model_copy(update={"start_epoch": 0}) if init is not None else cfg.adv,
        # a window has no validation rows to measure robustness on: the prequential
        # evaluation is where a stream is measured (and a window is trained, never tuned)
        "eval": cfg.eval.model_copy(update={"robust_every": 0}), "tune": TuneConfig()})
    return build_config(wcfg.model_dump(mode="json", by_alias=True))


def _window(cfg: RunConfig, log: StreamLog, w: Window, output: str, update: str, replay: int,
            model: str | None, address: str | None, held: tuple[int, int] = (0, 0),
            group: WorkerGroup | None = None) -> dict[str, Any]:
    """Evaluate, train and publish one window; its history record. ``model``: the window
    (under ``output/windows/``) whose model is published so far, if any; ``held``: the first
    rows whose ids the window's tables hold and the published model holds (`StreamLog.active`);
    ``group``: the stream's workers, which train it (and the record says their process ids)."""
    data_url = io.join(output, "data", w.name)
    run_url = io.join(output, "windows", w.name)
    if io.exists(run_url):  # a stopped attempt's, which may be published already
        publish(output, model)
    for url, marker in ((data_url, DATASET), (run_url, RUN)):
        io.remove_owned(url, marker)
    meta = log.write_window(w, data_url, update, replay, cfg.train.seed, held[0])
    record: dict[str, Any] = {"window": w.name, "begins": w.begins, "ends": w.ends,
                              "rows": w.stop - w.start, "train_rows": meta["counts"]["train"],
                              **log.sizes(w, held[0])}
    if model is not None:
        started = time.perf_counter()
        metrics, counts = prequential(cfg, log, w, data_url, io.join(output, "windows", model),
                                      held)
        record.update(counts, prequential=metrics, eval_s=time.perf_counter() - started)
    if update == "frozen" and model is not None:
        record["model"] = model  # the first window's, for ever
        return record
    if cfg.model.name == "sasrec" and not _has_sequences(data_url):
        _warn(f"window {w.name}: no user has two interactions to train on in it, so SASRec has "
              "no next item to learn: not trained (the published model stays)")
        record["model"] = model
        return record
    init = model if update == "incremental" else None
    wcfg = window_config(cfg, data_url, io.join(output, "windows", init) if init else None)
    started = time.perf_counter()
    run_training(wcfg, run_url, progress=False, address=address, group=group)
    record.update(train_s=time.perf_counter() - started, model=w.name)
    if group is not None:
        record["worker_pids"] = group.pids
    publish(output, w.name)
    return record


def _has_sequences(data_url: str) -> bool:
    """Whether some user of the dataset's train split has two interactions or more: a
    sequence with a next item."""
    users = read_part(data_url, "train.parquet", ["user"])["user"].to_numpy()
    return bool(users.size) and int(np.bincount(users).max()) >= 2


def prequential(cfg: RunConfig, log: StreamLog, w: Window, data_url: str, run: str,
                held: tuple[int, int] = (0, 0)) -> tuple[dict[str, float], dict[str, int]]:
    """The ranking metrics of the model of ``run`` on window ``w``'s rows (whose dataset is
    ``data_url``) before it trains on them, and what was evaluated (`StreamLog.prequential`).
    With ``eval.robust_every`` > 0 also under ``eval.robust_attack`` at ``eval.robust_eps``
    (``robust/...``), its δ raising the loss on ``eval.robust_rows`` of the rows the model
    learnt from, as the robust metrics of a run are measured."""
    data = load_dataset(data_url)
    view, counts = log.prequential(w, data, *held)
    model = warm_model(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"init_from": run, "init_optimizer": False})}), data)
    if not counts["evaluated_rows"]:
        return {}, counts
    task = make_task(cfg, view)
    metrics = task.evaluate(model, "test", cfg.eval)
    if cfg.eval.robust_every:
        batches = attack_batches(task, cfg.eval.robust_rows, cfg.eval.seed)
        attacked = attacked_metrics(model, task, make_loss(cfg), cfg.eval, batches,
                                    robust_attack(cfg.eval), "test")
        metrics.update({f"robust/{k}": v for k, v in attacked.items()})
    return metrics, counts


def publish(output: str, name: str | None) -> None:
    """Make window ``name``'s run the published model: ``latest.json`` names it (one atomic
    write), and on a local disk the link ``latest`` points at it (a new link renamed over the
    old one: a reader opens the old model or the new, never a mixture). None: no model is
    published (both are removed)."""
    latest = io.join(output, "latest.json")
    local = io.is_local(output)
    link = os.path.join(io.filesystem(output)[1], "latest") if local else ""
    if name is None:
        if local and os.path.islink(link):
            os.remove(link)
        if io.exists(latest):
            io.filesystem(latest)[0].rm(io.filesystem(latest)[1])
        return
    io.dump_json(latest, {"window": name, "run": f"windows/{name}"})
    if local:
        tmp = io.temporary(link)
        os.symlink(os.path.join("windows", name), tmp)
        os.replace(tmp, link)


def _prune(output: str, history: list[dict[str, Any]], keep: int) -> None:
    """Delete the runs of all but the newest ``keep`` trained windows and the datasets of all
    but the newest ``keep`` windows, never the published run nor its dataset (a warm start
    reads its ids there)."""
    published = history[-1]["model"]
    trained = [r["window"] for r in history if "train_s" in r]
    for name in trained[:-keep]:
        if name != published:
            io.remove_owned(io.join(output, "windows", name), RUN)
    for name in [r["window"] for r in history][:-keep]:
        if name != published:
            io.remove_owned(io.join(output, "data", name), DATASET)


def _plot(output: str, history: list[dict[str, Any]], cfg: RunConfig) -> None:
    metric = f"ndcg@{max(cfg.eval.ks)}"
    plot_stream({cfg.model.name: history}, metric, io.join(output, "stream_history.png"))


def _line(record: dict[str, Any], cfg: RunConfig) -> str:
    """A window's progress line: its name, rows, prequential NDCG and training time."""
    metric = f"ndcg@{max(cfg.eval.ks)}"
    shown = (f" prequential {metric} {record['prequential'][metric]:.4f}"
             if metric in record.get("prequential", {}) else "")
    trained = f", trained in {record['train_s']:.1f} s" if "train_s" in record else ""
    return f"window {record['window']}: {record['rows']} rows{shown}{trained}"
