"""Ray Tune on ml-100k (issue 5): does a 16-trial APR-MF search find a more robust config, fast?

Three runs on the same schedule (`jobs/configs/ml100k-apr-tune.yaml`: 60 epochs, 20 clean
warm-up epochs, robust valid NDCG@10 under PGD-10 at eps 0.5 every 5th epoch), one after another:

1. ``apr``: the shipped search as is (16 trials over eps, lambda, lr, ASHA), timed; ASHA's
   savings are the trial-epochs it did not run out of 16 x 60.
2. ``bpr``: the same config without an adversary (``adv.method=none``), a grid over the
   learning rate, no scheduler, optimising clean valid NDCG@10: the best clean BPR trial.
3. ``default``: `advrec train` of the same config with the default APR values (eps 0.5,
   lambda 1, lr 0.001), in-process.

The search's best config (``best.yaml``, by its objective) is then checked against the targets:
robust valid NDCG@10 >= 1.1x the default config's, clean valid NDCG@10 within 2 % of the best
BPR trial's. Results: ``benchmarks/out/tune/{apr,bpr,default}/`` and ``summary.json``, and a
Markdown table on stdout.

    .venv/bin/python benchmarks/tune.py [--data ../shared/data/ml-100k] [--bpr-lrs 0.001,0.003,0.01]
        [--search optuna --out benchmarks/out/tune-optuna]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import time
from pathlib import Path
from typing import Any

from advrec import io
from advrec.config import build_config, load_raw
from advrec.train import run_training
from advrec.tune.search import run_tune

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "jobs" / "configs" / "ml100k-apr-tune.yaml"


def search(raw: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one search into ``out`` (replacing it); its summary plus its wall time."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = run_tune(raw, str(out), progress=False)
    summary["wall_s"] = time.perf_counter() - start
    return summary


def bpr_raw(raw: dict[str, Any], lrs: list[float]) -> dict[str, Any]:
    """The APR search's config without its adversary, searching only the learning rate."""
    bpr = copy.deepcopy(raw)
    bpr["adv"] = {"method": "none"}
    bpr["tune"] = {"space": {"train.lr": {"grid": lrs}}, "num_samples": 1,
                   "max_concurrent": raw["tune"]["max_concurrent"], "scheduler": "none",
                   "metric": "valid/ndcg@10"}
    return bpr


def default_run(raw: dict[str, Any], out: Path) -> dict[str, Any]:
    """`advrec train` of the searched config with its own (default) values, in-process."""
    plain = copy.deepcopy(raw)
    plain.pop("tune")
    plain["scaling"] = {"num_workers": 0}
    shutil.rmtree(out, ignore_errors=True)
    metrics = run_training(build_config(plain), str(out), progress=False)
    return {"eps": plain["adv"]["eps"], "lambda": plain["adv"]["lambda"], "lr": plain["train"]["lr"],
            "clean": metrics["valid"]["ndcg@10"], "robust": metrics["robust_valid"]["ndcg@10"]}


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--bpr-lrs", default="0.001,0.003,0.01")
    parser.add_argument("--search", choices=["random", "optuna"], default=None,
                        help="the APR search's sampler (default: the shipped config's)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "tune")
    args = parser.parse_args()
    raw = load_raw(CONFIG, [f"data.source={args.data / 'u.data'}", "data.format=movielens",
                            *([f"tune.search={args.search}"] if args.search else [])])
    args.out.mkdir(parents=True, exist_ok=True)
    apr = search(raw, args.out / "apr")
    bpr = search(bpr_raw(raw, [float(x) for x in args.bpr_lrs.split(",")]), args.out / "bpr")
    default = default_run(raw, args.out / "default")

    best, best_bpr = apr["best"], max(bpr["rows"], key=lambda r: r["clean"])
    summary = {
        "wall_s": apr["wall_s"], "epochs": apr["epochs"], "budget": apr["budget"],
        "asha_saved": 1 - apr["epochs"] / apr["budget"], "apr_rows": apr["rows"],
        "front": [r["trial"] for r in apr["front"]], "best": best,
        "bpr_rows": bpr["rows"], "bpr_wall_s": bpr["wall_s"], "best_bpr": best_bpr,
        "default": default,
        "robust_ratio": best["robust"] / default["robust"],
        "clean_gap": 1 - best["clean"] / best_bpr["clean"],
    }
    io.dump_json(str(args.out / "summary.json"), summary)
    print(f"search: {summary['wall_s'] / 60:.1f} min, {apr['epochs']} of {apr['budget']} "
          f"trial-epochs ({100 * summary['asha_saved']:.1f} % saved by ASHA)")
    print("| trial | status | epochs | eps | lambda | lr | clean | robust | objective |")
    print("|---|---|---|---|---|---|---|---|---|")
    front = set(summary["front"])
    for r in apr["rows"]:
        tag = " (front)" if r["trial"] in front else ""
        tag += " (best)" if r["trial"] == best["trial"] else ""
        print(f"| {r['trial']} | {r['status']}{tag} | {r['epochs']} | {r['adv.eps']:.3f} | "
              f"{r['adv.lambda']:.3f} | {r['train.lr']:.5f} | {_f(r['clean'])} | "
              f"{_f(r['robust'])} | {_f(r['score'])} |")
    for r in bpr["rows"]:
        print(f"BPR lr {r['train.lr']}: clean {_f(r['clean'])}, robust {_f(r['robust'])}")
    print(f"default APR: clean {default['clean']:.4f}, robust {default['robust']:.4f}")
    print(f"best robust / default robust: {summary['robust_ratio']:.3f} (target >= 1.1); "
          f"best clean below best BPR clean by {100 * summary['clean_gap']:.2f} % (target <= 2 %)")


if __name__ == "__main__":
    main()
