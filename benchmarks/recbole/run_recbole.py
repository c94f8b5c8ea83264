#!/usr/bin/env python
"""Side-by-side RecBole baseline on ml-100k (run with the RecBole venv's python).

    benchmarks/recbole/setup.sh            # once: creates benchmarks/.recbole-venv
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 benchmarks/.recbole-venv/bin/python \
        benchmarks/recbole/run_recbole.py --model BPR --seed 2020

Trains a RecBole model (BPR by default) on the RecBole atomic files of ml-100k with RecBole's
defaults for that data set (every rating a positive, no filtering, per-user random 8:1:1 split,
full ranking over all items with training items masked), embedding 64, batch 2048, Adam lr 1e-3,
early stopping on valid NDCG@10 (stopping_step 10), CPU only. We time every training epoch
(``Trainer._train_epoch``) and every validation pass (``Trainer._valid_epoch``) ourselves with
``time.perf_counter`` and print ONE JSON line on stdout; RecBole's logging goes to stderr.

The data directory is only read: its atomic files are symlinked into a temporary directory
(RecBole derives ``<data_path>/<dataset>`` and, for 'ml-100k', would otherwise silently use the
copy bundled inside the recbole package). Logs, tensorboard files and checkpoints also live in
that temporary directory, which is removed at the end.

``--set KEY=VALUE`` (repeatable, VALUE parsed as YAML) overrides any RecBole config entry, e.g.
for SASRec: ``--model SASRec --set 'train_neg_sample_args=null' --set 'eval_args={split: {LS:
valid_and_test}, order: TO, group_by: user, mode: full}'``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# RecBole 1.2.1 calls torch.load() on its own checkpoints without weights_only=False.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

DATASET = "ml-100k"
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / DATASET / "recbole"
METRICS = ["Recall", "NDCG", "Hit", "MRR"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="BPR", help="RecBole model name (default: BPR)")
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="directory holding ml-100k.inter/.user/.item (default: %(default)s)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--epochs", type=int, default=300, help="max epochs (default: 300)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra RecBole config entry, VALUE parsed as YAML (repeatable)")
    p.add_argument("--log-level", default="INFO", help="RecBole's logging level on stderr")
    return p.parse_args(argv)


def link_data(src: Path, root: Path) -> Path:
    """Symlink the atomic files of ``src`` into ``root/ml-100k``; return ``root`` (RecBole's data_path)."""
    files = sorted(src.glob(f"{DATASET}.*"))
    if not any(f.name == f"{DATASET}.inter" for f in files):
        sys.exit(f"run_recbole: no {DATASET}.inter in {src}")
    dst = root / DATASET
    dst.mkdir(parents=True)
    for f in files:
        (dst / f.name).symlink_to(f.resolve())
    return root


def main(argv=None) -> int:
    args = parse_args(argv)
    import yaml

    overrides = {}
    for kv in args.overrides:
        key, sep, value = kv.partition("=")
        if not sep:
            sys.exit(f"run_recbole: --set wants KEY=VALUE, got {kv!r}")
        overrides[key.strip()] = yaml.safe_load(value)

    t_start = time.perf_counter()
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="recbole-") as tmp:
        tmp = Path(tmp)
        data_root = link_data(Path(args.data), tmp / "data")
        config_dict = {
            "data_path": str(data_root),
            "checkpoint_dir": str(tmp / "saved"),
            "use_gpu": False,
            "seed": args.seed,
            "reproducibility": True,
            "state": args.log_level,
            "show_progress": False,
            "epochs": args.epochs,
            "embedding_size": 64,
            "train_batch_size": 2048,
            "learner": "adam",
            "learning_rate": 1e-3,
            "stopping_step": 10,
            "eval_step": 1,
            "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO",
                          "group_by": "user", "mode": "full"},
            "metrics": METRICS,
            "topk": [10],
            "valid_metric": "NDCG@10",
            "valid_metric_bigger": True,
            "save_dataset": False,
            "save_dataloaders": False,
            "log_wandb": False,
        }
        config_dict.update(overrides)

        # RecBole writes ./log and ./log_tensorboard relative to the working directory.
        old_cwd = os.getcwd()
        os.chdir(tmp)
        try:
            # Config also parses sys.argv for "--key=value"; hide ours from it.
            saved_argv, sys.argv = sys.argv, sys.argv[:1]
            try:
                config = Config(model=args.model, dataset=DATASET, config_dict=config_dict)
            finally:
                sys.argv = saved_argv
            # For 'ml-100k' Config points data_path at the copy bundled in the package; undo that.
            config["data_path"] = str(data_root / DATASET)
            init_seed(config["seed"], config["reproducibility"])
            init_logger(config)  # StreamHandler -> stderr, FileHandler -> tmp/log
            logger = logging.getLogger()
            logger.info(config)

            dataset = create_dataset(config)
            logger.info(dataset)
            train_data, valid_data, test_data = data_preparation(config, dataset)

            init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
            model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
            logger.info(model)

            base = get_trainer(config["MODEL_TYPE"], config["model"])
            train_times: list[float] = []
            valid_times: list[float] = []

            class TimedTrainer(base):
                def _train_epoch(self, *a, **kw):
                    t0 = time.perf_counter()
                    out = super()._train_epoch(*a, **kw)
                    train_times.append(time.perf_counter() - t0)
                    return out

                def _valid_epoch(self, *a, **kw):
                    t0 = time.perf_counter()
                    out = super()._valid_epoch(*a, **kw)
                    valid_times.append(time.perf_counter() - t0)
                    return out

            trainer = TimedTrainer(config, model)
            t_fit = time.perf_counter()
            _, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
            fit_s = time.perf_counter() - t_fit
            test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
            logger.info("test result: %s", dict(test_result))
        finally:
            os.chdir(old_cwd)
            logging.shutdown()
    wall_s = time.perf_counter() - t_start

    n = len(train_times)
    best_epoch = (n - 1) - trainer.cur_step * trainer.eval_step if valid_times else None
    out = {
        "model": args.model,
        "seed": args.seed,
        "epochs": n,
        "best_epoch": best_epoch,
        "train_epoch_s_mean": statistics.fmean(train_times) if train_times else None,
        "train_epoch_s_median": statistics.median(train_times) if train_times else None,
        "valid_s_mean": statistics.fmean(valid_times) if valid_times else None,
        "fit_s": fit_s,
        "wall_s": wall_s,
        "threads": torch.get_num_threads(),
        "recbole": __import__("recbole").__version__,
        "torch": torch.__version__,
        "test": {k.lower(): float(v) for k, v in test_result.items()},
        "valid": {k.lower(): float(v) for k, v in (best_valid or {}).items()},
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
