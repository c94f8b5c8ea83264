"""A Ray Train worker group that lives across runs (`WorkerGroup`): `advrec stream` trains every
window on the same workers instead of starting a group per window.

Starting a worker group (``TorchTrainer.fit()``: the controller, the workers, their process
group) costs 15-30 s on a small machine, against a fraction of a second for a window's epochs:
it was almost all of a followed partition's latency. Here one ``fit()`` runs `serve_per_worker`
in a background thread for as long as the group is open. `WorkerGroup.run` hands a run's worker
config (what `advrec.train.loop.train_loop_per_worker` takes) to rank 0 through a Ray queue,
rank 0 broadcasts it to the others over the group's process group, every worker trains it, and
rank 0 puts the result on a second queue. A job that fails on a worker ends the group (Ray Train
aborts it, with no restart: ``max_failures`` 0, since a restarted group would not know the job
it lost) and `WorkerGroup.run` raises the error, as a run launched on its own would. Between
jobs rank 0 broadcasts a keep-alive every minute, since the other workers wait in a collective
that Ray Train's process group times out after 30 minutes: a followed prefix may stay quiet
for longer.
"""

from __future__ import annotations

import os
import queue
import threading
from types import TracebackType
from typing import Any, Self

import ray
import ray.train
import torch.distributed as dist
from ray.util.queue import Empty, Queue

from advrec.config import ScalingConfig
from advrec.errors import AdvrecError
from advrec.shards import gather_objects
from advrec.train.driver import connect, launch, run_cpus
from advrec.train.loop import train_loop_per_worker

POLL_S = 1.0
"""How often a waiting `WorkerGroup.run` checks that the group still runs."""
IDLE_S = 60.0
"""How often an idle group's rank 0 tells the others it is still waiting: they wait in a
collective, which Ray Train's process group times out after 30 minutes (``TorchConfig``)."""
IDLE = "idle"
"""What rank 0 broadcasts when no job came within `IDLE_S`."""


def serve_per_worker(config: dict[str, Any]) -> None:
    """A worker of the group: train each job of ``config["jobs"]`` (rank 0 takes it from the
    queue and broadcasts it; `IDLE` when none came in ``config["idle_s"]`` seconds) until the
    ``None`` that closes the group;
    rank 0 puts each job's result on ``config["results"]``: rank 0's return value,
    ``"result"``, and every worker's process id, ``"pids"``."""
    context = ray.train.get_context()
    shard = (context.get_world_rank(), context.get_world_size())
    while True:
        job: list[Any] = [None]
        if shard[0] == 0:
            try:
                job[0] = config["jobs"].get(timeout=config["idle_s"])
            except Empty:
                job[0] = IDLE
        if shard[1] > 1:
            dist.broadcast_object_list(job, src=0)
        if job[0] is None:
            return
        if job[0] == IDLE:
            continue
        result = train_loop_per_worker(job[0])
        pids = gather_objects(os.getpid(), shard)
        if shard[0] == 0:
            config["results"].put({"result": result, "pids": pids})


class WorkerGroup:
    """``scaling.num_workers`` Ray Train workers (on the cluster at ``address``, or a local Ray)
    that train one run after another while the group is open (a context manager); started by
    the first `run`. ``storage``: where Ray Train keeps the group's experiment state (a path or
    URL); ``idle_s``: the keep-alive's period (`IDLE_S`)."""

    def __init__(self, scaling: ScalingConfig, address: str | None, storage: str,
                 idle_s: float = IDLE_S) -> None:
        if scaling.num_workers < 1:
            raise ValueError("a worker group needs scaling.num_workers >= 1")
        # no restart: a restarted group would not know which job its failed rank 0 held
        self.scaling = scaling.model_copy(update={"max_failures": 0})
        self.address, self.storage, self.idle_s = address, storage, idle_s
        self.pids: list[int] = []  # the workers' process ids, as of the last run
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        return self

    def _start(self) -> None:
        connect(self.address, run_cpus(self.scaling, streaming=False))
        # the queues' actors take no CPU from the workers
        self._jobs = Queue(actor_options={"num_cpus": 0})
        self._results = Queue(actor_options={"num_cpus": 0})
        self._thread = threading.Thread(target=self._fit, name="advrec-worker-group",
                                        daemon=True)
        self._thread.start()

    def _fit(self) -> None:
        try:
            launch(serve_per_worker, {"jobs": self._jobs, "results": self._results,
                                      "idle_s": self.idle_s},
                   self.scaling, self.address, storage=self.storage)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by `run`
            self._error = exc

    def run(self, config: dict[str, Any]) -> Any:
        """Train the run ``config`` (`train_loop_per_worker`'s) on the group's workers; returns
        rank 0's return value. Raises what ended the group, if it ended. Interrupted while the
        workers train, it stops them before it raises: the caller may then clean up the run
        they write."""
        if self._thread is None:
            self._start()
        self._jobs.put(config)
        try:
            while True:
                try:
                    out = self._results.get(timeout=POLL_S)
                except (Empty, queue.Empty):
                    if self._alive():
                        continue
                    if self._error is not None:
                        raise self._error from None
                    raise AdvrecError("the Ray Train worker group stopped before the run "
                                      "ended") from None
                self.pids = out["pids"]
                return out["result"]
        except BaseException:
            self._abort()
            raise

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _abort(self) -> None:
        """Stop the workers now, mid-run: their actors are this driver's, and end with its
        Ray connection (as `launch` does for an interrupted run)."""
        if self._alive():
            ray.shutdown()
            self._thread.join(timeout=60)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._thread is None:  # never started
            return
        if self._alive():  # between runs: every worker returns, fit() ends
            self._jobs.put(None)
            self._thread.join()
        if ray.is_initialized():  # not after `_abort`, which ended the queues with Ray
            for q in (self._jobs, self._results):
                q.shutdown()
