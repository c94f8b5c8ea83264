"""SASRec as published (issue 18): the paper's settings, each fix's own effect, and RecBole's SASRec.

On ml-100k, prepared once with the paper's split (``loo:keep-short``: the last item of each user
is the test item, the one before it the validation item), so every run, and RecBole, use the
same rows:

- ``jobs/configs/sasrec-paper.yaml`` for each seed, its best checkpoint tested under the paper's
  sampled protocol (the held-out item against 100 items the user never had) and full ranking;
- ``--ablation``: each fix's own effect, one seed, the paper's settings throughout. Fixes 1 and 5
  changed code, so their "before" runs the code of the commit before them (``git archive`` of
  that revision into ``--out``); fixes 2 and 4 are settings (``train.betas``, the evaluation
  schedule). Fix 3 (``loo:keep-short``) changes no row of ml-100k, whose users all have 20 or
  more ratings; the table says so from the data;
- ``--deviations``: point 5's five deviations of the replaced block, each put back alone into
  the official block (``sasrec_deviations.py``), one seed, ``sasrec-paper.yaml`` itself, against
  its own run of that seed;
- ``--recbole``: RecBole 1.2.1's SASRec (``benchmarks/recbole/setup.sh``) on the same rows
  (``run_recbole.py --split-from --paper``: the same settings where RecBole has them), once per
  protocol and seed, for ``--recbole-epochs`` epochs (the paper's 200 by default), and the
  epoch-time ratio (median training epoch, evaluation excluded, on both sides). RecBole's
  protocols are its own (run_recbole.py's docstring: it masks no history item in full ranking,
  and its 100 negatives may be the user's items), so its figures are RecBole's view of the rows.

A finished run keeps its figures in ``RUN/bench.json`` and is not trained again. Results:
``OUT/results.json`` and Markdown tables on stdout (copied into benchmarks/README.md).

    .venv/bin/python benchmarks/sasrec_paper.py [--seeds 0,1,2] [--ablation] [--deviations]
        [--recbole] [--recbole-epochs 200] [--data ../shared/data/ml-100k]
        [--out benchmarks/out/sasrec-paper] [--jobs 1] [--set KEY=VALUE]
    .venv/bin/python benchmarks/sasrec_paper.py --seeds 0 --set train.epochs=2   # smoke run

Every training and test runs in a child process (this script again, with ``--advrec`` or
``--test-run``) whose ``PYTHONPATH`` is the code under test, so this script imports no advrec
module itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from sasrec_deviations import DEVIATIONS
from sasrec_deviations import apply as apply_deviation

ROOT = Path(__file__).resolve().parents[1]
RECBOLE_PY = ROOT / "benchmarks" / ".recbole-venv" / "bin" / "python"
PAPER = ROOT / "jobs" / "configs" / "sasrec-paper.yaml"
HERE = ROOT / "distributed"  # the code of this checkout
K = 10
# (name, the fix, the revision whose code runs (None: this checkout), overrides); each row adds
# one fix to the row above it, and the paper config's own run (fix 4: its schedule) ends the table
ABLATION: list[tuple[str, str, str | None, list[str]]] = [
    ("before every fix", "-", "78a941a", []),
    ("+ Glorot positions", "1", "a9768e7", []),
    ("+ the official blocks", "5", "a7eb91f", []),
    ("+ betas (0.9, 0.98)", "2", None, ["train.betas=[0.9,0.98]"]),
]
# the ablation's base: the paper config in the keys every revision reads (train.betas and
# loo:keep-short are newer than the oldest revision; on ml-100k loo:keep-short is plain loo),
# with the old schedule, validated every epoch and stopped after 10 without improvement
ABLATION_BASE = ["data.split=loo", "train.eval_every=1", "train.patience=10"]


def child(code: Path, args: list[str]) -> str:
    """Run ``args`` with ``code`` first on the path; its stdout (stderr passes through)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    return subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.PIPE,
                          text=True).stdout


def code_of(revision: str | None, out: Path) -> Path:
    """The ``distributed`` folder of ``revision`` (extracted once under ``out``), or this one."""
    if revision is None:
        return HERE
    folder = out / "code" / revision
    if not (folder / "distributed").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "distributed"],
                                 check=True, stdout=subprocess.PIPE).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "distributed"


def prepared(data: Path, out: Path) -> Path:
    """ml-100k prepared with the paper's split, once."""
    dataset = out / "ml100k-loo-keep-short"
    if not (dataset / "meta.json").exists():
        child(HERE, ["-c", "from advrec.cli import run; run()", "prepare", "--input", str(data),
                     "--format", "movielens", "--output", str(dataset),
                     "--split", "loo:keep-short"])
    return dataset


def train(code: Path, config: Path, run: Path, overrides: list[str],
          deviation: str | None = None) -> dict[str, Any]:
    """Train ``config`` with ``code`` (unless ``run`` holds a finished training), test its best
    checkpoint under both protocols; with ``deviation`` (``sasrec_deviations.DEVIATIONS``) put
    into the model in both children."""
    done = run / "bench.json"
    if done.exists():
        return json.loads(done.read_text())
    patch = ["--deviation", deviation] if deviation else []
    if not (run / "metrics.json").exists():
        child(code, [__file__, *patch, "--advrec", "train", "--config", str(config),
                     "--output", str(run), "--quiet", *overrides])
    tested = json.loads(child(code, [__file__, *patch, "--test-run", str(run)]))
    history = json.loads((run / "history.json").read_text())
    row = {**tested, "epochs": len(history),
           "best_epoch": json.loads((run / "metrics.json").read_text())["best_epoch"],
           "epoch_s": statistics.median(h["train_s"] for h in history)}
    done.write_text(json.dumps(row, indent=1))
    return row


def test_run(run: str) -> dict[str, dict[str, float]]:
    """The best checkpoint's test metrics under the sampled protocol (100 negatives) and full
    ranking; runs in the child, with the code that trained it."""
    from advrec import io
    from advrec.data import load_dataset
    from advrec.train import load_model, read_run
    from advrec.train.tasks import make_task

    cfg, dataset = read_run(run)
    data = load_dataset(dataset)
    model, _ = load_model(io.join(run, "checkpoint", "model.pt"), cfg, data)
    task = make_task(cfg, data)
    return {protocol: task.evaluate(model, "test", cfg.eval.model_validate(
                {**cfg.eval.model_dump(), "protocol": protocol, "num_negatives": 100}))
            for protocol in ("sampled", "full")}


def recbole(dataset: Path, seed: int, mode: str, epochs: int, out: Path) -> dict[str, Any]:
    """RecBole's SASRec with the paper's settings on ``dataset``'s rows, tested under ``mode``
    (``uni100`` or ``full``); kept in ``out`` once finished."""
    done = out / f"recbole-{mode}-seed{seed}-{epochs}ep.json"
    if done.exists():
        return json.loads(done.read_text())
    if not RECBOLE_PY.exists():
        sys.exit("sasrec_paper: no RecBole venv; run benchmarks/recbole/setup.sh")
    stdout = subprocess.run(
        [str(RECBOLE_PY), str(ROOT / "benchmarks" / "recbole" / "run_recbole.py"), "--model",
         "SASRec", "--paper", "--split-from", str(dataset), "--eval-mode", mode, "--seed",
         str(seed), "--epochs", str(epochs), "--log-level", "WARNING"],
        check=True, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}).stdout
    row = json.loads(stdout.strip().splitlines()[-1])
    done.write_text(json.dumps(row, indent=1))
    return row


def short_users(dataset: Path) -> int:
    """Users of the prepared dataset with fewer than 3 interactions (fix 3's users)."""
    import pyarrow.parquet as pq

    counts: dict[int, int] = {}
    for part in ("train", "valid", "test"):
        for user in pq.read_table(dataset / f"{part}.parquet", columns=["user"])["user"].to_pylist():
            counts[user] = counts.get(user, 0) + 1
    return sum(n < 3 for n in counts.values())


def ablation_config(out: Path) -> Path:
    """The paper config without the keys older revisions refuse (see ``ABLATION_BASE``)."""
    raw = yaml.safe_load(PAPER.read_text())
    del raw["train"]["betas"]
    path = out / "ablation.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def positive(text: str) -> int:
    """``--jobs``: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def mean(rows: list[dict], protocol: str, metric: str) -> float:
    return statistics.fmean(r[protocol][metric] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "sasrec-paper")
    parser.add_argument("--ablation", action="store_true", help="each fix's effect, first seed")
    parser.add_argument("--deviations", action="store_true",
                        help="point 5's deviations, each alone, first seed")
    parser.add_argument("--recbole", action="store_true", help="RecBole's SASRec, same rows")
    parser.add_argument("--recbole-epochs", type=int, default=200,
                        help="RecBole's epochs (default: the paper's 200)")
    parser.add_argument("--jobs", type=positive, default=1,
                        help="advrec trainings run this many at a time (give each "
                             "OMP_NUM_THREADS=1 on a small machine)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every advrec run (e.g. train.epochs=2)")
    # the children's entries: a deviation to put in, then advrec's CLI or the test of a run
    parser.add_argument("--deviation", choices=DEVIATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--advrec", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--test-run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.deviation:
        apply_deviation(args.deviation)
    if args.advrec:
        from advrec.cli import run

        sys.argv = ["advrec", *args.advrec]
        run()
    if args.test_run:
        print(json.dumps(test_run(args.test_run)))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = prepared(args.data, args.out)
    source = [f"data.source={dataset}", "data.format=prepared"]

    # every advrec training first, --jobs at a time, then the tables
    specs = [(HERE, PAPER, args.out / f"paper-seed{seed}", [*source, f"train.seed={seed}",
                                                             *args.set]) for seed in seeds]
    if args.ablation:
        base = ablation_config(args.out)
        specs += [(code_of(revision, args.out), base,
                   args.out / "ablation" / f"{revision or 'head'}-{'-'.join(overrides) or 'base'}",
                   [*source, f"train.seed={seeds[0]}", *ABLATION_BASE, *overrides, *args.set])
                  for _, _, revision, overrides in ABLATION]
    if args.deviations:
        specs += [(HERE, PAPER, args.out / "deviations" / deviation,
                   [*source, f"train.seed={seeds[0]}", *args.set], deviation)
                  for deviation in DEVIATIONS]
    with ThreadPoolExecutor(args.jobs) as pool:  # each training is a child process
        trained = list(pool.map(lambda spec: train(*spec), specs))
    paper = dict(zip(seeds, trained))
    trained = trained[len(seeds):]
    results: dict[str, Any] = {"seeds": seeds, "paper": paper}
    print("| seed | HR@10 (100 neg.) | NDCG@10 (100 neg.) | HR@10 (full) | NDCG@10 (full) | "
          "best epoch | epoch s |")
    print("|---|---|---|---|---|---|---|")
    for seed, r in paper.items():
        print(f"| {seed} | {r['sampled'][f'hit@{K}']:.4f} | {r['sampled'][f'ndcg@{K}']:.4f} | "
              f"{r['full'][f'hit@{K}']:.4f} | {r['full'][f'ndcg@{K}']:.4f} | "
              f"{r['best_epoch'] + 1} | {r['epoch_s']:.2f} |")
    rows = list(paper.values())
    print(f"| mean | {mean(rows, 'sampled', f'hit@{K}'):.4f} | "
          f"{mean(rows, 'sampled', f'ndcg@{K}'):.4f} | {mean(rows, 'full', f'hit@{K}'):.4f} | "
          f"{mean(rows, 'full', f'ndcg@{K}'):.4f} | | |\n")

    if args.ablation:
        seed = seeds[0]
        results["short_users"] = short_users(dataset)
        results["ablation"] = []
        print(f"Each fix, seed {seed} (fix 3: {results['short_users']} users of ml-100k have "
              "fewer than 3 interactions, so loo:keep-short changes no row)\n")
        print("| variant | fix | NDCG@10 (100 neg.) | NDCG@10 (full) | best epoch / epochs |")
        print("|---|---|---|---|---|")
        for (name, fix, revision, overrides), r in zip(ABLATION, trained):
            results["ablation"].append({"variant": name, "fix": fix, "revision": revision,
                                        "overrides": overrides, **r})
            print(f"| {name} | {fix} | {r['sampled'][f'ndcg@{K}']:.4f} | "
                  f"{r['full'][f'ndcg@{K}']:.4f} | {r['best_epoch'] + 1} / {r['epochs']} |")
        trained = trained[len(ABLATION):]
        r = paper[seed]
        print(f"| + evaluated every 20 epochs for 200 (sasrec-paper.yaml) | 4 | "
              f"{r['sampled'][f'ndcg@{K}']:.4f} | {r['full'][f'ndcg@{K}']:.4f} | "
              f"{r['best_epoch'] + 1} / {r['epochs']} |\n")
    if args.deviations:
        seed, r = seeds[0], paper[seeds[0]]
        results["deviations"] = {}
        print(f"Point 5's deviations, each alone in the official block, seed {seed}\n")
        print("| block | NDCG@10 (100 neg.) | NDCG@10 (full) | best epoch / epochs |")
        print("|---|---|---|---|")
        print(f"| official (sasrec-paper.yaml) | {r['sampled'][f'ndcg@{K}']:.4f} | "
              f"{r['full'][f'ndcg@{K}']:.4f} | {r['best_epoch'] + 1} / {r['epochs']} |")
        for deviation, d in zip(DEVIATIONS, trained):
            results["deviations"][deviation] = d
            print(f"| + {deviation} | {d['sampled'][f'ndcg@{K}']:.4f} | "
                  f"{d['full'][f'ndcg@{K}']:.4f} | {d['best_epoch'] + 1} / {d['epochs']} |")
        print()
    if args.recbole:
        results["recbole"] = {mode: {seed: recbole(dataset, seed, mode, args.recbole_epochs,
                                                   args.out) for seed in seeds}
                              for mode in ("uni100", "full")}
        print("| seed | RecBole HR@10 (100 neg.) | NDCG@10 (100 neg.) | HR@10 (full) | "
              "NDCG@10 (full) | epoch s | advrec epoch / RecBole epoch |")
        print("|---|---|---|---|---|---|---|")
        for seed in seeds:
            sampled, full = (results["recbole"][m][seed] for m in ("uni100", "full"))
            epoch = statistics.median([sampled["train_epoch_s_median"],
                                       full["train_epoch_s_median"]])
            print(f"| {seed} | {sampled['test'][f'hit@{K}']:.4f} | "
                  f"{sampled['test'][f'ndcg@{K}']:.4f} | {full['test'][f'hit@{K}']:.4f} | "
                  f"{full['test'][f'ndcg@{K}']:.4f} | {epoch:.1f} | "
                  f"{paper[seed]['epoch_s'] / epoch:.4f} |")
        print()
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
