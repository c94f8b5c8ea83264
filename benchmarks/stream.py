"""Issue 21: a model that keeps up with a log. ml-100k replayed in weekly windows (its 31 weeks)
with `advrec stream`, APR-MF, for each seed:

- ``incremental``: each window continues the last window's model (warm start) for
  ``--epochs`` epochs on the window's rows;
- ``retrain``: each window trains a model from scratch on every row so far, for
  ``--retrain-epochs`` epochs;
- ``frozen``: the first window's model (``--retrain-epochs`` epochs), never updated;
- ``clean``: ``incremental`` without the adversary (BPR-MF), the robustness baseline.

Every window's model is evaluated on the next window before training on it (prequential,
full ranking over the users and items seen before), clean and under FGM at ε = 0.5
(``eval.robust_attack=fgm``, the config's ``eval.relative``). Reports per stream the prequential
NDCG@10 averaged over the evaluated windows and the training seconds per window, and per window
the FGM drop of the APR stream against the clean one's. Every window of a stream trains in this
process (``scaling.num_workers=0``), one stream at a time.

Results: ``OUT/results.json`` (every stream's history), ``OUT/stream.png`` (seed 0's streams)
and Markdown tables on stdout. A stopped benchmark continues: finished windows are kept.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stream.py --seeds 0,1,2 \\
        --data ../shared/data/ml-100k/u.data --out /tmp/stream-bench
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from advrec.config import load_config
from advrec.metrics.plots import plot_stream
from advrec.stream import run_stream

ROOT = Path(__file__).resolve().parents[1]
METRIC = "ndcg@10"
STREAMS = {
    "incremental": ("incremental", []),
    "retrain": ("retrain", []),
    "frozen": ("frozen", []),
    "clean": ("incremental", ["adv.method=none"]),
}
"""Each stream: its ``--update`` and the keys it overrides besides the shared ones."""


def overrides(args: argparse.Namespace, name: str, seed: int) -> list[str]:
    """The config keys of stream ``name`` for ``seed``: APR-MF as shipped, with a clean
    warm-up of half the epochs of a model trained from scratch (the first window; every window
    of a retrain; a warm-started window is adversarial from its first epoch), a smaller batch
    (a week is ~3k rows), the FGM evaluation."""
    update, own = STREAMS[name]
    epochs = args.epochs if update == "incremental" else args.retrain_epochs
    return [f"data.source={args.data}", f"data.format={args.format}", f"train.seed={seed}",
            f"adv.start_epoch={epochs // 2}", f"train.epochs={epochs}",
            f"train.batch_size={args.batch_size}",
            "eval.robust_every=1", "eval.robust_attack=fgm", "eval.robust_eps=0.5", *own]


def summary(history: list[dict[str, Any]]) -> dict[str, float]:
    """A stream's prequential metric (clean and attacked) averaged over its evaluated windows,
    and its training seconds per window (the first window's too, where trained)."""
    evaluated = [r["prequential"] for r in history if METRIC in r.get("prequential", {})]
    trained = [r["train_s"] for r in history if "train_s" in r]
    return {"windows": len(evaluated),
            METRIC: statistics.fmean(p[METRIC] for p in evaluated),
            f"robust/{METRIC}": statistics.fmean(p[f"robust/{METRIC}"] for p in evaluated),
            "train_s_per_window": statistics.fmean(trained) if trained else 0.0,
            "train_s_total": sum(trained)}


def drops(apr: list[dict[str, Any]], clean: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per evaluated window, the relative FGM drop of the APR stream and of the clean one."""
    def drop(p: dict[str, float]) -> float:
        return (p[METRIC] - p[f"robust/{METRIC}"]) / p[METRIC] if p[METRIC] else 0.0

    at = {r["window"]: r for r in clean}
    return [{"window": r["window"], "apr": drop(r["prequential"]),
             "clean": drop(at[r["window"]]["prequential"])}
            for r in apr if METRIC in r.get("prequential", {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "jobs/configs/ml100k-apr.yaml"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/ml-100k/u.data"))
    parser.add_argument("--format", default="movielens")
    parser.add_argument("--window", default="7d")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--epochs", type=int, default=10, help="per incremental window")
    parser.add_argument("--retrain-epochs", type=int, default=40,
                        help="per retrained window, and the frozen model's")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/out/stream"))
    parser.add_argument("--set", nargs="*", default=[], help="more config overrides for all")
    args = parser.parse_args()
    out = Path(args.out)
    results: dict[str, dict[str, Any]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.streams.split(","):
            cfg = load_config(args.config, [*overrides(args, name, seed), *args.set])
            history = run_stream(cfg, str(out / f"{name}-seed{seed}"), args.window,
                                 STREAMS[name][0], progress=False)
            results[f"{name}-seed{seed}"] = {"summary": summary(history), "history": history}
            print(f"{name} seed {seed}: {json.dumps(results[f'{name}-seed{seed}']['summary'])}",
                  flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    seeds = sorted({k.rsplit("-seed", 1)[1] for k in results})
    plot_stream({k.rsplit("-seed", 1)[0]: v["history"] for k, v in results.items()
                 if k.endswith(f"-seed{seeds[0]}")}, METRIC, str(out / "stream.png"))
    report(results)


def report(results: dict[str, dict[str, Any]]) -> None:
    """The Markdown tables: each stream's means over seeds; the APR stream's FGM drop per
    window against the clean stream's."""
    names = sorted({k.rsplit("-seed", 1)[0] for k in results}, key=list(STREAMS).index)
    print(f"| stream | prequential {METRIC} | under FGM 0.5 | training s / window | seeds |")
    print("|---|---|---|---|---|")
    for name in names:
        runs = [v["summary"] for k, v in results.items() if k.rsplit("-seed", 1)[0] == name]
        mean = {key: statistics.fmean(r[key] for r in runs)
                for key in (METRIC, f"robust/{METRIC}", "train_s_per_window")}
        spread = (f" ± {statistics.stdev(r[METRIC] for r in runs):.4f}" if len(runs) > 1
                  else "")
        print(f"| {name} | {mean[METRIC]:.4f}{spread} | {mean[f'robust/{METRIC}']:.4f} | "
              f"{mean['train_s_per_window']:.1f} | {len(runs)} |")
    for key in results:
        name, seed = key.rsplit("-seed", 1)
        if name == "incremental" and f"clean-seed{seed}" in results:
            per = drops(results[key]["history"], results[f"clean-seed{seed}"]["history"])
            held = sum(d["apr"] <= d["clean"] / 2 for d in per)
            print(f"seed {seed}: the APR stream's FGM drop is at most half the clean stream's in "
                  f"{held} of {len(per)} windows; mean drop {statistics.fmean(d['apr'] for d in per):.3f}"
                  f" against {statistics.fmean(d['clean'] for d in per):.3f}")


if __name__ == "__main__":
    main()
