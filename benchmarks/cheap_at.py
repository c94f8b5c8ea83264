"""Cheap adversarial training (issue 20): free, fast and accumulate against standard FGM and PGD.

Quality (``--part quality``): trains a shipped config (``--config``, default
`jobs/configs/ml100k-apr.yaml`) for each seed under each schedule of ``--schedules``
(`SCHEDULES`: the keys each overrides besides ``data.source``, ``data.format`` and
``train.seed``), attacks the best epoch with PGD-10 at ε = 0.5 (APR's protocol,
`advrec.report.evaluate_run`; the config's own ``eval.relative``; ``--attack-eps`` for another ε),
and reports clean test NDCG@10
(AUC for CTR models), its relative drop, epochs run and the training time (``train_s``, without
evaluation) of the adversarial phase up to its best epoch.

Cost (``--part cost``): every schedule's epoch against the clean one's, interleaved in one
process (`epoch_time.interleaved_epochs`, the median over rounds of the ratio within a round),
and with ``--workers N`` on N Ray Train workers (DDP over gloo, each its shard of every epoch);
with ``--set model.embeddings=torchrec`` the tables are sharded by torchrec instead of DDP's
(``accumulate-sharded`` then shards the δ memory with them). The table also gives each
schedule's δ memory per worker (``adv.schedule=accumulate``).
A free epoch is ``adv.replays`` passes over the shard; free runs ``train.epochs / replays`` of
them, so its ratio per scheduled epoch (the one comparable with the others') is its pass over
the replays. Results: ``OUT/{quality,cost-wN}.json`` and Markdown tables on stdout.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cheap_at.py --part quality --seeds 0,1,2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cheap_at.py --part cost [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from epoch_time import interleaved_epochs, median_ratio  # a sibling: run as a script

from advrec.adversarial import AdversarialObjective, Attack
from advrec.adversarial.perturb import Tensors
from advrec.config import RunConfig, load_config
from advrec.data import load_dataset
from advrec.data.source import resolve_dataset
from advrec.models import build_model
from advrec.report import evaluate_run
from advrec.train import resume_training, run_training
from advrec.train.allocator import tune_malloc
from advrec.train.checkpoint import has_train_state
from advrec.train.loop import distribute, make_objective
from advrec.train.optim import make_optimizer
from advrec.train.tasks import make_loss, make_task

ROOT = Path(__file__).resolve().parents[1]
EPS = 0.5
SCHEDULES: dict[str, list[str]] = {
    "clean": ["adv.method=none"],
    "standard": [],  # the config's own adversary
    "fgm": ["adv.method=fgm", "adv.steps=1"],
    "pgd3": ["adv.method=pgd", "adv.steps=3"],
    "pgd10": ["adv.method=pgd", "adv.steps=10"],
    "free2": ["adv.method=fgm", "adv.steps=1", "adv.schedule=free", "adv.replays=2"],
    "free4": ["adv.method=fgm", "adv.steps=1", "adv.schedule=free", "adv.replays=4"],
    "free8": ["adv.method=fgm", "adv.steps=1", "adv.schedule=free", "adv.replays=8"],
    "fast": ["adv.method=fgm", "adv.steps=1", "adv.schedule=fast", "eval.robust_every=1"],
    "accumulate": ["adv.method=fgm", "adv.steps=1", "adv.schedule=accumulate"],
    "accumulate-decay0.5": ["adv.method=fgm", "adv.steps=1", "adv.schedule=accumulate",
                            "adv.decay=0.5"],
    "accumulate-decay0": ["adv.method=fgm", "adv.steps=1", "adv.schedule=accumulate",
                          "adv.decay=0"],
    # with torchrec tables (--set model.embeddings=torchrec): the δ memory cut across workers
    "accumulate-sharded": ["adv.method=fgm", "adv.steps=1", "adv.schedule=accumulate",
                           "adv.memory=sharded"],
    # cost only: the adversarial forward and backward with δ = 0 and no attack computed, the
    # floor of every schedule of L + λ·L(x + δ)
    "floor": ["adv.method=fgm", "adv.steps=1"],
}


class _Floor(AdversarialObjective):
    """The objective with a δ of zero, computed from nothing (the ``floor`` schedule)."""

    def _delta(self, emb: Tensors, keys: list[str], *args: Any, **kwargs: Any) -> Tensors:
        return {k: torch.zeros_like(emb[k]) for k in keys}


def config(path: Path, schedule: str, seed: int, data: Path | str, fmt: str,
           extra: list[str] = ()) -> RunConfig:
    """The shipped config at ``path`` under ``schedule``, on ``data``, with ``seed``."""
    overrides = [f"data.source={data}", f"data.format={fmt}", f"train.seed={seed}"]
    if "step_size" not in " ".join(SCHEDULES[schedule]) and schedule != "standard":
        overrides.append("adv.step_size=null")  # each schedule's own default step
    return load_config(path, [*overrides, *SCHEDULES[schedule], *extra])


def quality(cfg: RunConfig, name: str, seed: int, out: Path, eps: float) -> dict[str, Any]:
    """Train one schedule, attack its best epoch with PGD-10 at ``eps``, and collect the
    figures."""
    run = out / f"{name}-seed{seed}"
    if (run / "metrics.json").exists():  # trained; stopped before its attack
        metrics = json.loads((run / "metrics.json").read_text())
    elif has_train_state(str(run)):  # a stopped benchmark continues its stopped run
        metrics = resume_training(str(run), progress=False)
    else:
        metrics = run_training(cfg, str(run), progress=False)
    curve = evaluate_run(str(run), ["pgd"], [0.0, eps], steps=10, progress=False)["pgd"]
    metric = "auc" if cfg.kind != "ranking" else "ndcg@10"
    history = json.loads((run / "history.json").read_text())
    best = metrics["best_epoch"]
    adversarial = [h for h in history if h["adversarial"] and h["epoch"] <= best]
    clean, attacked = curve["0.0"][metric], curve[str(eps)][metric]
    return {"schedule": name, "seed": seed, "metric": metric, "attack_eps": eps,
            "test": metrics["test"][metric], "clean_eval": clean, "attacked": attacked,
            "drop": (clean - attacked) / clean, "best_epoch": best, "epochs": len(history),
            "collapsed": any(h.get("collapsed") for h in history),
            "train_s_to_best": sum(h["train_s"] for h in adversarial),
            "epoch_s": statistics.median(h["train_s"] for h in history
                                         if h["adversarial"] == (cfg.adv.method != "none"))}


def cost_runs(cfgs: dict[str, RunConfig], shard: tuple[int, int],
              rounds: int) -> dict[str, Any]:
    """Each schedule's epoch times over ``rounds`` interleaved rounds, on this worker's
    ``shard`` (``"times"``), and the bytes of its δ memory on this worker (``"delta_bytes"``,
    0 without one)."""
    first = next(iter(cfgs.values()))
    data = load_dataset(first.data.source)
    sharded = first.model.embeddings == "torchrec"
    if sharded:
        from advrec.train.sharding import process_group
        from advrec.train.sharding import shard as shard_tables
    runs, schedules = {}, {}
    with process_group() if sharded else contextlib.nullcontext():
        for name, cfg in cfgs.items():
            torch.manual_seed(0)
            model = build_model(cfg, data, sharded=sharded)
            # the floor takes no clean gradient either: a random attack does not start from it
            objective = (_Floor(model, make_loss(cfg), Attack("random", cfg.adv.eps),
                                lam=cfg.adv.lam) if name == "floor"
                         else make_objective(cfg, model, make_loss(cfg)))
            wrapped = (shard_tables(objective, model, cfg, torch.device("cpu")) if sharded
                       else distribute(objective, shard[1]))
            runs[name] = (wrapped, make_optimizer(model, cfg.train, fused_tables=sharded),
                          torch.Generator().manual_seed(shard[0]))
            schedules[name] = (cfg.adv.replays, objective.memory)
        task = make_task(first, data, shard=shard)
        batch = -(-first.train.batch_size // shard[1])
        times = interleaved_epochs(runs, task, batch, rounds, "clean", schedules=schedules)
    return {"times": times, "delta_bytes": {
        name: sum(t.numel() * t.element_size() for t in memory.tables.values())
        if memory is not None else 0 for name, (_, memory) in schedules.items()}}


def _worker(config: dict[str, Any]) -> None:
    """A Ray Train worker's interleaved rounds; rank 0 writes the times."""
    import ray.train

    context = ray.train.get_context()
    shard = (context.get_world_rank(), context.get_world_size())
    cfgs = {k: RunConfig.model_validate(v) for k, v in config["cfgs"].items()}
    measured = cost_runs(cfgs, shard, config["rounds"])
    if shard[0] == 0:
        Path(config["out"]).write_text(json.dumps(measured))


def cost(cfgs: dict[str, RunConfig], workers: int, rounds: int, out: Path) -> dict[str, Any]:
    """``rounds`` of interleaved epoch times and the δ memory (`cost_runs`, rank 0's), in this
    process or on ``workers`` Ray Train workers."""
    if workers == 0:
        return cost_runs(cfgs, (0, 1), rounds)
    import ray
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(num_cpus=workers, include_dashboard=False)
    times = out / f"times-w{workers}.json"
    TorchTrainer(_worker, scaling_config=ScalingConfig(num_workers=workers),
                 train_loop_config={"cfgs": {k: c.model_dump(by_alias=True)
                                             for k, c in cfgs.items()},
                                    "rounds": rounds, "out": str(times)}).fit()
    return json.loads(times.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["quality", "cost"], required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "jobs/configs/ml100k-apr.yaml")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ml-100k/u.data")
    parser.add_argument("--format", default="movielens")
    parser.add_argument("--schedules", default="clean,fgm,pgd3,pgd10,free2,free4,fast,"
                        "accumulate,accumulate-decay0.5,accumulate-decay0")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--attack-eps", type=float, default=EPS,
                        help="the PGD-10 attack's ε (the config's eval.relative applies)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--set", nargs="*", default=[], help="more config overrides for all")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/cheap_at")
    args = parser.parse_args()
    names = args.schedules.split(",")
    unknown = [n for n in names if n not in SCHEDULES]
    if unknown:
        parser.error(f"unknown schedules {unknown}; known: {', '.join(SCHEDULES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    tune_malloc()  # as the training loop does

    if args.part == "quality":
        if "floor" in names:
            parser.error("the floor schedule is a cost measurement (--part cost) alone")
        rows = []
        path = args.out / "quality.json"
        done = json.loads(path.read_text()) if path.exists() else []
        for seed in map(int, args.seeds.split(",")):
            for name in names:
                old = [r for r in done if (r["schedule"], r["seed"]) == (name, seed)]
                if old:  # a stopped benchmark continues
                    rows.append(old[0])
                    continue
                started = time.perf_counter()
                cfg = config(args.config, name, seed, args.data, args.format, args.set)
                rows.append(quality(cfg, name, seed, args.out / args.config.stem,
                                    args.attack_eps))
                rows[-1]["wall_s"] = time.perf_counter() - started
                path.write_text(json.dumps(done + [r for r in rows if r not in done], indent=2))
                print(json.dumps(rows[-1]), flush=True)
        print_quality(rows, names)
        return

    # one prepared dataset (the training's own cache) for every schedule
    prepared = resolve_dataset(config(args.config, "clean", 0, args.data, args.format,
                                      args.set).data)
    cfgs = {n: config(args.config, n, 0, prepared, "prepared", args.set) for n in names}
    measured = cost(cfgs, args.workers, args.rounds, args.out)
    (args.out / f"cost-{args.config.stem}-w{args.workers}.json").write_text(json.dumps(measured))
    times = measured["times"]
    print(f"{args.config.stem}: {args.rounds} interleaved rounds, {max(args.workers, 1)} "
          f"worker(s), {cfgs[names[0]].model.embeddings} tables\n\n| schedule | epoch s (median) "
          "| pass / clean | per scheduled epoch / clean | δ memory per worker, MiB |\n"
          "|---|---|---|---|---|")
    for name in names:
        ratio = median_ratio(times, name, "clean")
        print(f"| {name} | {statistics.median(times[name]):.3f} | {ratio:.2f} | "
              f"{ratio / cfgs[name].adv.replays:.2f} | "
              f"{measured['delta_bytes'][name] / 2**20:.2f} |")


def print_quality(rows: list[dict[str, Any]], names: list[str]) -> None:
    """Per schedule, the means over seeds."""
    metric = rows[0]["metric"]
    print(f"\n| schedule | test {metric} | drop under PGD-10 ε={rows[0]['attack_eps']} | epochs | "
          "best epoch | "
          "adversarial train s to best | seeds |\n|---|---|---|---|---|---|---|")
    for name in names:
        rs = [r for r in rows if r["schedule"] == name]
        mean = {k: statistics.fmean(r[k] for r in rs)
                for k in ("test", "drop", "epochs", "best_epoch", "train_s_to_best")}
        print(f"| {name} | {mean['test']:.4f} | {100 * mean['drop']:.1f} % | "
              f"{mean['epochs']:.0f} | {mean['best_epoch']:.0f} | "
              f"{mean['train_s_to_best']:.1f} | {len(rs)} |")


if __name__ == "__main__":
    main()
