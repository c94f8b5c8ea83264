"""Training rows streamed by Ray Data (``data.stream``): every row of the train split once per
epoch, with the columns its task needs, in an order drawn from the epoch's generator."""

from __future__ import annotations

import os

import torch

from advrec.config import build_config
from advrec.data.dataset import load_dataset
from advrec.train.driver import train_stream
from advrec.train.loop import epoch_generator
from advrec.train.tasks import LABELS, StreamRows, make_task, row_columns


def _epoch(task, seed: int, epoch: int) -> dict[str, torch.Tensor]:
    """One epoch's batches of ``task``, concatenated."""
    batches = list(task.batches(100, epoch_generator(seed, 0, epoch)))
    assert all(b["user"].numel() == 100 for b in batches[:-1])
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def test_a_streamed_epoch_is_the_train_split_shuffled_by_its_generator(
        ctr_small: str, feature_options: dict, ray_local: None) -> None:
    cfg = build_config({"data": {"source": ctr_small, "stream": True, "shuffle_buffer": 500,
                                 **feature_options}, "model": {"name": "mmoe"}})
    data = load_dataset(ctr_small, train_pairs_only=True)
    assert data.train.label is None and data.train.timestamp is None  # only the pairs
    stream = train_stream(ctr_small, row_columns(LABELS[cfg.kind]))()
    task = make_task(cfg, data, stream=stream)
    assert isinstance(task.rows, StreamRows)

    first = _epoch(task, seed=0, epoch=0)
    # every row once, each with its own click and rating (multi-task labels: (B, 1, 2))
    whole = load_dataset(ctr_small).train
    key = first["user"] * data.num_items + first["item"][:, 0]
    order = torch.argsort(key)
    assert torch.equal(key[order], torch.sort(whole.user * data.num_items + whole.item).values)
    truth = torch.argsort(whole.user * data.num_items + whole.item)
    assert torch.equal(first["label"][order, 0], torch.stack([whole.label, whole.rating], -1)[truth])

    # the order is the generator's: the same for the same (seed, rank, epoch), else another
    assert torch.equal(_epoch(task, seed=0, epoch=0)["user"], first["user"])
    assert not torch.equal(_epoch(task, seed=0, epoch=1)["user"], first["user"])
    # shuffled, not in the split's (user-sorted) order
    assert not torch.equal(first["user"], whole.user)


def test_a_local_ray_tells_its_workers_where_its_state_api_is(ray_local: None) -> None:
    # Ray Train's placement-group cleaner (a worker) asks the State API whether a run's
    # controller is gone; told nothing, it looks for "the" local Ray instance, and with a second
    # one on the machine it finds none, and a Tune trial's CPUs are never freed
    import ray
    from ray.util.state import list_nodes

    @ray.remote(num_cpus=0)
    def told() -> str | None:
        return os.environ.get("RAY_API_SERVER_ADDRESS")

    url = ray.get(told.remote())
    assert url and url.startswith("http://127.0.0.1:")
    nodes = list_nodes(address=url)  # this instance's API: its one node is ours
    assert [n.node_id for n in nodes] == [ray.get_runtime_context().get_node_id()]


def test_a_local_ray_quiets_its_workers_noisy_loggers(ray_local: None) -> None:
    """Every process of the local instance runs `advrec.ray_quiet` first: Ray Train's
    controller would print a traceback each time a busy machine delays a resource request. The
    quieting survives the controller's own logging set-up, which resets levels under
    ``ray.train``."""
    import logging
    import logging.config

    import ray

    from advrec.ray_quiet import NOISY

    def shown(level: int) -> bool:
        return bool(logging.getLogger(NOISY[0]).filter(
            logging.LogRecord(NOISY[0], level, __file__, 0, "request timed out", None, None)))

    @ray.remote
    def in_a_worker() -> tuple[bool, bool]:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "loggers": {"ray.train": {"level": "INFO"}}})
        return shown(logging.WARNING), shown(logging.ERROR)

    assert shown(logging.WARNING)  # this process (the driver) is not quieted
    assert ray.get(in_a_worker.remote()) == (False, True)


def test_a_local_ray_too_small_for_a_run_is_started_again_bigger(ray_local: None) -> None:
    # a stream's read tasks need CPUs beside the workers': on the too-small instance an earlier
    # run started, this run would wait forever
    import ray

    from advrec.train.driver import connect

    before = ray.cluster_resources()["CPU"]
    connect(None, before + 1)
    assert ray.cluster_resources()["CPU"] == before + 1
    connect(None, 1)  # big enough: kept
    assert ray.cluster_resources()["CPU"] == before + 1
