"""Model-zoo benchmark (issue 3): each shipped zoo config against its clean-trained twin.

For each model, the shipped `jobs/configs/ml100k-<model>.yaml` is trained as shipped
(adversarially) and as its clean twin (``adv.method=none``), for each seed, on ml-100k's RecBole
atomic files (ratings plus the users' and items' side features). Only ``data.source``,
``data.format`` and ``train.seed`` are overridden (and ``adv.method`` for the twin). Each model is
then attacked with PGD (10 steps) at the ε of its own config, on its own training loss, and the
relative drop of its headline metric is reported. Results: ``benchmarks/out/zoo/results.json``
and a Markdown table on stdout (copied into benchmarks/README.md). Each finished run keeps its
figures in ``<run>/zoo.json`` and is not trained again while its config is unchanged (a run
trained elsewhere with the same config can be dropped in), so an interrupted benchmark resumes, and
several invocations (one model each, in parallel) sharing ``--out`` can be tabulated by a last
invocation over all of them.

    .venv/bin/python benchmarks/zoo.py [--models deepfm,dcnv2,twotower,mmoe,sasrec] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from advrec.config import AdvConfig, RunConfig, load_config
from advrec.report import evaluate_run, headline
from advrec.train import run_training

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("deepfm", "dcnv2", "twotower", "mmoe", "sasrec")


def same_config(run: Path, cfg: RunConfig) -> bool:
    """Whether ``run`` was trained (or began training) with ``cfg``; a clean run's (``adv.method
    =none``) other adv settings do not count: it trains without an adversary."""
    exclude = {"adv": set(AdvConfig.model_fields) - {"method"}} if cfg.adv.method == "none" else None
    return run.exists() and (load_config(run / "config.yaml").model_dump(exclude=exclude)
                             == cfg.model_dump(exclude=exclude))


def trained(cfg: RunConfig, run: Path) -> dict:
    """The test metrics (``metrics.json``) of ``cfg`` trained into ``run``: trained now unless
    ``run`` already holds that training finished (new, interrupted, or of a config changed
    since: trained again)."""
    if same_config(run, cfg) and (run / "metrics.json").exists():
        return json.loads((run / "metrics.json").read_text())
    if run.exists():
        shutil.rmtree(run)
    return run_training(cfg, str(run), progress=False)


def run_one(model: str, seed: int, clean: bool, data: Path, out: Path,
            extra: list[str], attack_eps: float | None = None) -> dict:
    """Train one config (or its clean twin) for one seed, attack it at ``attack_eps`` (default:
    the shipped config's ε), and collect the figures."""
    overrides = [f"data.source={data / 'recbole'}", "data.format=recbole", f"train.seed={seed}",
                 *extra]
    shipped = load_config(ROOT / "jobs" / "configs" / f"ml100k-{model}.yaml", overrides)
    cfg = load_config(ROOT / "jobs" / "configs" / f"ml100k-{model}.yaml",
                      [*overrides, "adv.method=none"] if clean else overrides)
    run = out / f"{model}-{'clean' if clean else 'adv'}-seed{seed}"
    # the twin is attacked at its adversarial sibling's ε
    attack = shipped.adv.eps if attack_eps is None else attack_eps
    done = run / "zoo.json"
    if same_config(run, cfg) and done.exists():
        row = json.loads(done.read_text())
        if row["eps"] == attack:
            return row
    metrics = trained(cfg, run)
    eps = repr(float(attack))
    curve = evaluate_run(str(run), ["pgd"], [0.0, attack], steps=10, progress=False)
    metric = headline(cfg)[0]
    history = json.loads((run / "history.json").read_text())
    before, after = curve["pgd"]["0.0"][metric], curve["pgd"][eps][metric]
    row = {"model": model, "seed": seed, "clean": clean, "metric": metric,
           "test": metrics["test"], "value": metrics["test"][metric], "attacked": after,
           "drop": (before - after) / before, "eps": attack,
           "epochs": len(history), "best_epoch": metrics["best_epoch"],
           "epoch_s": statistics.median(h["train_s"] for h in history)}
    done.write_text(json.dumps(row, indent=1))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "zoo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every run (e.g. train.epochs=2 for a smoke run)")
    parser.add_argument("--attack-eps", type=float, default=None, metavar="EPS",
                        help="attack every run at this ε (default: each config's adv.eps)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")

    rows = [run_one(m, s, clean, args.data, args.out, args.set, args.attack_eps)
            for m in models for s in seeds for clean in (True, False)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))

    print(f"seeds {seeds}; PGD-10 at each config's ε; drop = relative fall of the metric\n")
    print("| model | metric | clean twin | adversarial | adv / twin | twin drop | adv drop "
          "| adv drop ≤ ½ twin's | ε |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in models:
        def mean(key: str, clean: bool, model: str = m) -> float:
            return statistics.fmean(r[key] for r in rows if r["model"] == model
                                    and r["clean"] == clean)
        twin, adv = mean("value", True), mean("value", False)
        twin_drop, adv_drop = mean("drop", True), mean("drop", False)
        metric = next(r["metric"] for r in rows if r["model"] == m)
        eps = next(r["eps"] for r in rows if r["model"] == m)
        print(f"| {m} | {metric} | {twin:.4f} | {adv:.4f} | {adv / twin:.3f} "
              f"| {100 * twin_drop:.1f} % | {100 * adv_drop:.1f} % "
              f"| {'✔' if adv_drop <= twin_drop / 2 else '✘'} | {eps} |")
    print("\nper seed:")
    for r in rows:
        print(f"- {r['model']} {'clean' if r['clean'] else 'adv'} seed {r['seed']}: "
              f"{r['metric']} {r['value']:.4f}, under PGD {r['attacked']:.4f}, "
              f"{r['epochs']} epochs (best {r['best_epoch']}), {r['epoch_s']:.2f} s/epoch")


if __name__ == "__main__":
    main()
