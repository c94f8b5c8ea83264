"""Training on several workers: DDP over gloo, each worker on its own shard, one all-reduce per
optimizer step for every model whatever the attack, sharded evaluation equal to one worker's,
training and the robustness evaluation under Ray Train with 2 workers on S3, and a killed
worker that Ray Train restarts from the last checkpoint."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import s3fs
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from advrec.adversarial import AdversarialObjective
from advrec.cli import main
from advrec.config import build_config
from advrec.config.policy import FEATURE_MODELS
from advrec.data import load_dataset, prepare
from advrec.models import build_model
from advrec.train.loop import attack_from_config, distribute, epoch_generator
from advrec.train.optim import make_optimizer
from advrec.train.tasks import make_loss, make_task
from histories import without_times
from zoo_models import MODELS

STEPS = 3


@pytest.fixture(scope="module")
def prepared(udata_small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("ddp") / "data")
    prepare(str(udata_small), "movielens", out, seed=0)
    return out


def _counting_allreduce(state, bucket):  # unannotated: DDP rejects string annotations
    """DDP communication hook: count the call in ``state[0]``, then all-reduce as usual."""
    state[0] += 1
    return allreduce_hook(None, bucket)


def _count_allreduces(rank: int, world: int, init: str, dataset: str, options: dict,
                      out: str) -> None:
    """Worker: ``STEPS`` steps of every zoo model, clean and with FGM and PGD-5 (also with
    sparse embedding gradients, with adaptive ε for the user-id models, with 2 swapped
    history items, jsma-items, for SASRec, and with 2 changed feature fields, jsma-fields, for
    the feature models), under DDP, counting the all-reduces DDP launches (its communication
    hook runs once per bucket)."""
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    data = load_dataset(dataset)
    counts: dict[str, list[int]] = {}
    for name, model_options in MODELS.items():
        for variant in ("none", "fgm", "pgd", "pgd-sparse", "fgm-vat", "pgd-pamacf",
                        "jsma-items", "jsma-fields"):
            method, _, extra = variant.partition("-")
            adaptive = extra if extra in ("vat", "pamacf") else "none"
            if adaptive != "none" and name == "sasrec":
                continue  # no user rows: a config error
            if variant.startswith("jsma-"):
                if name not in (("sasrec",) if variant == "jsma-items" else FEATURE_MODELS):
                    continue  # no histories, or no feature fields: a config error
                method = variant
            cfg = build_config({
                "data": {"source": dataset, **options},
                "model": {"name": name, "dim": 8, **model_options},
                "adv": {"method": method, "eps": 0.5, "steps": 5, "adaptive": adaptive,
                        "budget": 2},
                "train": {"num_negatives": 2, "sparse_embeddings": variant.endswith("sparse")}})
            torch.manual_seed(rank)  # different inits: DDP must make them equal (rank 0's)
            model = build_model(cfg, data)
            optimizer = make_optimizer(model, cfg.train)
            objective = distribute(AdversarialObjective(
                model, make_loss(cfg), attack_from_config(cfg.adv), lam=1.0, adaptive=adaptive),
                world)
            calls = [0]
            objective.register_comm_hook(calls, _counting_allreduce)
            generator = epoch_generator(0, rank, 0)
            batches = make_task(cfg, data, shard=(rank, world)).batches(8, generator)
            per_step = []
            for _, batch in zip(range(STEPS), batches):
                before = calls[0]
                loss = objective(batch, adversarial=method != "none", generator=generator)["loss"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                per_step.append(calls[0] - before)
            counts[f"{name}/{variant}"] = per_step
            # the replicas stayed equal: same init (broadcast), same averaged gradients
            flat = torch.cat([p.detach().flatten() for p in model.parameters()])
            gathered = [torch.empty_like(flat) for _ in range(world)]
            dist.all_gather(gathered, flat)
            counts[f"{name}/{variant}/replicas_equal"] = [int(torch.equal(*gathered))]
            tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
            dense = sum(p.numel() for p in model.parameters()) > sum(
                t.weight.numel() for t in tables)
            # DDP gives each sparse gradient a bucket of its own, the dense rest shares one
            counts[f"{name}/{variant}/buckets"] = [len(tables) + int(dense)]
            # DDP's reducer is freed now, while its process group lives: freed at exit, after
            # the group, it deadlocked (its destructor held the GIL that gloo's thread waited on)
            del objective
    Path(out, f"rank{rank}.json").write_text(json.dumps(counts))
    dist.destroy_process_group()


def test_one_allreduce_per_step_for_every_model_and_attack(ctr_small: str, feature_options: dict,
                                                           tmp_path: Path) -> None:
    mp.spawn(_count_allreduces,
             args=(2, str(tmp_path / "init"), ctr_small, feature_options, str(tmp_path)), nprocs=2)
    for rank in range(2):
        counts = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name in MODELS:
            # a tiny model's gradients fit one bucket: one all-reduce per step, clean or with
            # the attack's 1 (FGM) or 5 (PGD) inner gradient steps; find_unused_parameters is
            # off, so a parameter without a gradient would have failed the second step
            steps = [counts[f"{name}/{m}"] for m in ("none", "fgm", "pgd")]
            assert steps == [[1] * STEPS] * 3, name
            # sparse tables (gloo): one all-reduce per bucket, still none from the attack
            assert counts[f"{name}/pgd-sparse"] == counts[f"{name}/pgd-sparse/buckets"] * STEPS
            assert all(counts[f"{name}/{m}/replicas_equal"] == [1]
                       for m in ("none", "fgm", "pgd", "pgd-sparse")), name
            if name != "sasrec":
                # adaptive ε reads the worker's own batch: still no communication in the attack
                adaptive = ("fgm-vat", "pgd-pamacf")
                assert [counts[f"{name}/{m}"] for m in adaptive] == [[1] * STEPS] * 2, name
                assert all(counts[f"{name}/{m}/replicas_equal"] == [1] for m in adaptive), name
        # swapping history items (2 rounds, each a forward and an inner gradient): no
        # communication either, and the replicas stay equal
        assert counts["sasrec/jsma-items"] == [1] * STEPS
        assert counts["sasrec/jsma-items/replicas_equal"] == [1]
        # changing feature fields (2 rounds of `score` alone, then their rows looked up): no
        # communication either, for every feature model
        for name in FEATURE_MODELS:
            assert counts[f"{name}/jsma-fields"] == [1] * STEPS, name
            assert counts[f"{name}/jsma-fields/replicas_equal"] == [1], name


TWO_WORKERS = ["model.name=mf", "model.dim=16", "adv.method=pgd", "adv.steps=2", "adv.eps=0.5",
               "adv.relative=true", "train.epochs=3", "train.lr=0.01", "train.batch_size=256",
               "scaling.num_workers=2", "data.stream=true", "data.shuffle_buffer=2000"]


@pytest.fixture(scope="module")
def two_workers(prepared: str, s3_store: str, ray_local: None) -> dict:
    """A 2-worker PGD run that streams its training rows from the S3 store (Ray Data, split
    between the workers) and writes its run there; returns where, and its history and
    metrics."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.put(prepared, "advrec/ddp/data", recursive=True)
    run = f"s3://advrec/ddp/run-{uuid.uuid4().hex[:6]}"
    assert main(["train", "--output", run, "--quiet", "data.source=s3://advrec/ddp/data",
                 *TWO_WORKERS]) == 0
    return {"run": run, "fs": fs, **{name: json.loads(fs.cat(f"{run}/{name}.json"))
                                     for name in ("history", "metrics")}}


def test_two_ray_train_workers_train_end_to_end_on_s3(two_workers: dict, tmp_path: Path) -> None:
    run, fs, history, metrics = (two_workers[k] for k in ("run", "fs", "history", "metrics"))
    assert len(history) == 3 and history[-1]["clean"] < history[0]["clean"]
    assert metrics["test"]["hit@10"] > 0
    assert metrics["devices"] == [{"device": "cpu", "backend": "gloo"}] * 2
    assert fs.exists(f"{run}/checkpoint/model.pt") and fs.exists(f"{run}/checkpoints")

    # the robustness curve on 2 workers (the run's own scaling) equals the in-process one
    alone = tmp_path / "alone"
    fs.get(run, str(alone), recursive=True)
    attack = ["--attack", "fgm,pgd", "--eps", "0,0.5", "--steps", "3", "--quiet"]
    assert main(["evaluate", "--run", run, *attack]) == 0
    assert main(["evaluate", "--run", str(alone), "--workers", "0", *attack]) == 0
    fs.invalidate_cache()  # its listing of the run (by fs.get) predates robustness.json
    shared = json.loads(fs.cat(f"{run}/robustness.json"))
    single = json.loads((alone / "robustness.json").read_text())
    assert shared["fgm"]["0.0"] == pytest.approx(metrics["test"], abs=1e-6)
    for a in ("fgm", "pgd"):
        assert shared[a]["0.5"]["ndcg@10"] < shared[a]["0.0"]["ndcg@10"]
        for e in ("0.0", "0.5"):
            assert shared[a][e] == pytest.approx(single[a][e], abs=1e-6), (a, e)


def test_a_killed_worker_restarts_from_the_last_checkpoint(two_workers: dict,
                                                           tmp_path: Path) -> None:
    # the same run, but one worker dies mid-epoch 1 (SIGKILL): Ray Train restarts both from
    # the checkpoint of epoch 0, and the run ends as the uninterrupted one did
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", "data.source=s3://advrec/ddp/data",
                 *TWO_WORKERS, "scaling.max_failures=1", "train.fault_epoch=1"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1, 2]  # none missing, none repeated
    for resumed, whole in zip(without_times(history), without_times(two_workers["history"]), strict=True):
        assert resumed == pytest.approx(whole, abs=1e-4)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == two_workers["metrics"]["best_epoch"]
    for split in ("valid", "test"):
        assert metrics[split] == pytest.approx(two_workers["metrics"][split], abs=1e-4)


EVALUATED = {  # model, eval options: every evaluation path (full, sampled, CTR, multi-task),
    # and the beyond-accuracy metrics' (per user, and corpus counts summed across workers)
    "mf-full": ("mf", {"beyond": True}),
    "sasrec-sampled": ("sasrec", {"protocol": "sampled", "num_negatives": 20, "batch_users": 7}),
    "sasrec-full": ("sasrec", {"beyond": True, "batch_users": 7}),
    "twotower-full": ("twotower", {"batch_users": 5, "beyond": True}),
    "deepfm": ("deepfm", {}),
    "mmoe": ("mmoe", {}),
}


def _metrics(dataset: str, options: dict, shard: tuple[int, int]) -> dict[str, dict]:
    """Every `EVALUATED` setup's valid metrics, for one shard; untrained models from one seed."""
    data = load_dataset(dataset)
    out = {}
    for key, (name, eval_options) in EVALUATED.items():
        cfg = build_config({"data": {"source": dataset, **options},
                            "model": {"name": name, "dim": 8, **MODELS[name]},
                            "eval": eval_options})
        torch.manual_seed(0)
        model = build_model(cfg, data)
        out[key] = make_task(cfg, data, shard=shard).evaluate(model, "valid", cfg.eval)
    return out


def _evaluate_shard(rank: int, world: int, init: str, dataset: str, options: dict,
                    out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    Path(out, f"eval{rank}.json").write_text(json.dumps(_metrics(dataset, options, (rank, world))))
    dist.destroy_process_group()


def test_sharded_evaluation_equals_one_worker(ctr_small: str, feature_options: dict,
                                              tmp_path: Path) -> None:
    whole = _metrics(ctr_small, feature_options, (0, 1))
    mp.spawn(_evaluate_shard,
             args=(3, str(tmp_path / "init"), ctr_small, feature_options, str(tmp_path)), nprocs=3)
    for rank in range(3):
        sharded = json.loads((tmp_path / f"eval{rank}.json").read_text())
        assert sharded.keys() == whole.keys()
        for key, metrics in whole.items():
            assert sharded[key].keys() == metrics.keys()
            assert sharded[key] == pytest.approx(metrics, abs=1e-6, rel=0), key


def test_a_workers_bad_input_is_one_error(prepared: str, tmp_path: Path, ray_local: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # DeepFM needs click labels, which this dataset lacks: only the worker's task finds out
    run = tmp_path / "run"
    code = main(["train", "--output", str(run), "--quiet", f"data.source={prepared}",
                 "model.name=deepfm", "train.epochs=1", "scaling.num_workers=1"])
    assert code != 0 and not run.exists()
    # (Ray may forward the worker's own log lines too)
    errors = [line for line in capsys.readouterr().err.splitlines() if "advrec: error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"advrec: error: {prepared}: no click labels")
