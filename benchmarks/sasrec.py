"""ml-100k SASRec benchmark: quality against BPR-MF on leave-one-out, and epoch time vs RecBole.

Runs the shipped `jobs/configs/ml100k-sasrec.yaml` as its clean twin (``adv.method=none``; the
adversarial SASRec is compared with it in `benchmarks/zoo.py`), and `jobs/configs/ml100k-bpr.yaml`
with ``data.split=loo`` (the same leave-one-out split, one held-out item per user, full ranking),
overriding only ``data.source``, ``data.format`` and ``train.seed`` (and ``train.epochs`` when
``--epochs`` caps them). Each trained SASRec checkpoint is evaluated a second time under the
sampled protocol (the held-out item against 100 sampled negatives, as the SASRec paper reports).
When the RecBole venv exists (``benchmarks/recbole/setup.sh``), RecBole 1.2.1's SASRec runs in the
same process tree on the same leave-one-out data for ``--recbole-epochs`` epochs, for the
epoch-time ratio (median training epoch, evaluation excluded, on both sides). Results:
``benchmarks/out/sasrec/results.json`` and a Markdown table on stdout.

    .venv/bin/python benchmarks/sasrec.py [--seeds 0,1,2] [--data ../shared/data/ml-100k] \
        [--recbole-epochs 2] [--no-recbole]
    .venv/bin/python benchmarks/sasrec.py --seeds 0 --epochs 2 --recbole-epochs 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from advrec.config import load_config
from advrec.data import load_dataset
from advrec.train import load_model, read_run, run_training
from advrec.train.checkpoint import model_url
from advrec.train.tasks import make_task

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"sasrec": ROOT / "jobs" / "configs" / "ml100k-sasrec.yaml",
           "bpr": ROOT / "jobs" / "configs" / "ml100k-bpr.yaml"}
# SASRec itself, clean (benchmarks/zoo.py compares the shipped adversarial SASRec with this
# twin); BPR-MF on SASRec's leave-one-out split
EXTRA = {"sasrec": ["adv.method=none"], "bpr": ["data.split=loo"]}
RECBOLE_PY = ROOT / "benchmarks" / ".recbole-venv" / "bin" / "python"
# RecBole's SASRec with its defaults (every prefix of a user's history is a training sequence,
# MAX_ITEM_LIST_LENGTH 50, CE over all items), on leave-one-out by time with full ranking
RECBOLE_SASREC = ["--model", "SASRec", "--set", "train_neg_sample_args=null",
                  "--set", ("eval_args={split: {LS: valid_and_test}, order: TO, group_by: user, "
                           "mode: full}")]


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def run_advrec(name: str, seed: int, data: Path, out: Path, epochs: int | None) -> dict:
    """Train one shipped config for one seed; SASRec is also evaluated under the sampled protocol."""
    overrides = [f"data.source={data / 'u.data'}", "data.format=movielens", f"train.seed={seed}",
                 *EXTRA[name]]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    cfg = load_config(CONFIGS[name], overrides)
    run = out / f"{name}-seed{seed}"
    start = time.perf_counter()
    metrics = run_training(cfg, str(run), progress=False)
    wall = time.perf_counter() - start
    history = json.loads((run / "history.json").read_text())
    row = {"method": name, "seed": seed, "wall_s": wall, "epochs": len(history),
           "best_epoch": metrics["best_epoch"],
           "epoch_s": statistics.median(h["train_s"] for h in history), "test": metrics["test"]}
    if name == "sasrec":
        row["test_sampled"] = evaluate_sampled(str(run))
    return row


def evaluate_sampled(run: str, negatives: int = 100) -> dict[str, float]:
    """Test metrics of a trained run's best checkpoint: held-out item vs ``negatives`` samples."""
    cfg, dataset = read_run(run)
    eval_cfg = cfg.eval.model_validate({**cfg.eval.model_dump(), "protocol": "sampled",
                                        "num_negatives": negatives})
    data = load_dataset(dataset)
    model, _ = load_model(model_url(run), cfg, data)
    return make_task(cfg, data).evaluate(model, "test", eval_cfg)


def run_recbole(seed: int, data: Path, epochs: int) -> dict | None:
    if not RECBOLE_PY.exists():
        print("RecBole venv missing: run benchmarks/recbole/setup.sh for the side-by-side timing",
              file=sys.stderr)
        return None
    out = subprocess.run([str(RECBOLE_PY), str(ROOT / "benchmarks" / "recbole" / "run_recbole.py"),
                          "--data", str(data / "recbole"), "--seed", str(seed),
                          "--epochs", str(epochs), "--log-level", "WARNING", *RECBOLE_SASREC],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "sasrec")
    parser.add_argument("--epochs", type=int, default=None,
                        help="cap advrec's training epochs (default: the configs' own)")
    parser.add_argument("--recbole-epochs", type=int, default=2,
                        help="RecBole SASRec epochs to time (default: 2; about 200 s each on 2 cores)")
    parser.add_argument("--no-recbole", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    rows = [run_advrec(name, seed, args.data, args.out, args.epochs)
            for seed in seeds for name in CONFIGS]
    # RecBole SASRec's epoch time does not depend on the seed: one run is enough
    recbole = None if args.no_recbole else run_recbole(seeds[0], args.data, args.recbole_epochs)

    by = {name: [r for r in rows if r["method"] == name] for name in CONFIGS}
    summary = {name: {"test_ndcg@10": mean([r["test"]["ndcg@10"] for r in rs]),
                      "test_hit@10": mean([r["test"]["hit@10"] for r in rs]),
                      "epoch_s": statistics.median(r["epoch_s"] for r in rs),
                      "epochs": mean([r["epochs"] for r in rs])}
               for name, rs in by.items()}
    sampled = {k: mean([r["test_sampled"][k] for r in by["sasrec"]]) for k in ("hit@10", "ndcg@10")}
    ratios = {"sasrec ndcg@10 / bpr-mf (loo) ndcg@10 (target >= 1.2)":
              summary["sasrec"]["test_ndcg@10"] / summary["bpr"]["test_ndcg@10"]}
    if recbole:
        summary["recbole_sasrec"] = {"epoch_s": recbole["train_epoch_s_median"],
                                     "epochs": recbole["epochs"]}
        ratios["advrec sasrec epoch / recbole sasrec epoch (target <= 0.05)"] = (
            summary["sasrec"]["epoch_s"] / recbole["train_epoch_s_median"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"seeds": seeds, "runs": rows, "recbole": recbole, "summary": summary,
         "sampled": sampled, "ratios": ratios}, indent=2))

    print("| seed | SASRec NDCG@10 (full) | BPR-MF loo NDCG@10 | ratio | SASRec HR@10 (100 neg) "
          "| SASRec NDCG@10 (100 neg) | SASRec epoch s | epochs (SASRec / BPR) |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        s = next(r for r in by["sasrec"] if r["seed"] == seed)
        b = next(r for r in by["bpr"] if r["seed"] == seed)
        print(f"| {seed} | {s['test']['ndcg@10']:.4f} | {b['test']['ndcg@10']:.4f} | "
              f"{s['test']['ndcg@10'] / b['test']['ndcg@10']:.2f} | "
              f"{s['test_sampled']['hit@10']:.4f} | {s['test_sampled']['ndcg@10']:.4f} | "
              f"{s['epoch_s']:.2f} | {s['epochs']} / {b['epochs']} |")
    print(f"| mean | {summary['sasrec']['test_ndcg@10']:.4f} | {summary['bpr']['test_ndcg@10']:.4f} "
          f"| {ratios['sasrec ndcg@10 / bpr-mf (loo) ndcg@10 (target >= 1.2)']:.2f} | "
          f"{sampled['hit@10']:.4f} | {sampled['ndcg@10']:.4f} | "
          f"{summary['sasrec']['epoch_s']:.2f} (median) | |")
    print()
    if recbole:
        print(f"RecBole {recbole['recbole']} SASRec: median training epoch "
              f"{recbole['train_epoch_s_median']:.1f} s over {recbole['epochs']} epochs\n")
    for k, v in ratios.items():
        print(f"- {k}: {v:.3f}")


if __name__ == "__main__":
    main()
