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

``--split-from DIR`` trains, validates and tests on exactly the rows of an ``advrec prepare``
dataset (``train/valid/test.parquet`` mapped back to raw ids through ``users/items.parquet``): the
three parts are written as ``ml-100k.{train,valid,test}.inter`` (raw ``user_id``/``item_id``,
``rating``/``timestamp`` as in the log, and ``label:float`` for a CTR dataset) beside the linked
``.user``/``.item`` files, and RecBole reads them through ``benchmark_filename: [train, valid,
test]``, which skips its own filtering and splitting. Reading Parquet needs pyarrow in the RecBole
venv (``pip install pyarrow==17.0.0``: 18 and 19 abort at exit beside numpy 1.26).

For a sequential model (SASRec, any of RecBole's ``MODEL_TYPE`` SEQUENTIAL) RecBole does not
augment benchmark files, so the parts are written as its augmentation would make them of
advrec's split (`sequence_rows`): train holds every train item but a user's first as a target,
with the train items before it in ``item_id_list`` (the last ``MAX_ITEM_LIST_LENGTH``); valid
the valid item after the user's train items; test the test item after train and valid; a user
of ``loo:keep-short`` without valid and test items is in train only. ``ml-100k.item`` is written
with advrec's items (not linked), so RecBole ranks exactly advrec's catalogue. The run stops
unless RecBole's three dataloaders hold as many target rows as advrec's parts imply and as many
items as advrec's.

``--paper`` (with ``--model SASRec``) trains SASRec with the paper's settings (`PAPER_SASREC`,
advrec's ``jobs/configs/sasrec-paper.yaml``: dim 50, 2 blocks, 1 head, dropout 0.2, max_len 200,
BPR against one negative as RecBole's nearest to BCE, Adam at 1e-3 with RecBole's fixed betas
(0.9, 0.999), batch 128, ``--epochs`` epochs without early stopping, evaluated every 20, the
best evaluation kept). ``--eval-mode full|uni100`` picks the ranking protocol of valid and test
(default full). Against advrec's (`advrec.metrics.evaluate`), for a sequential model RecBole
1.2.1's
- ``full`` does not mask the user's history (``FullSortEvalDataLoader`` passes no history for
  sequential models): every item but the padding is ranked, the items before the target too,
  where advrec masks the user's train items (and for test, the valid item);
- ``uni100`` draws the 100 negatives uniformly with replacement from every item but the row's
  own target (``RepeatableSampler``, which RecBole requires for sequential models), so they may
  be items of the user's history; advrec draws them from the items the user never had in train,
  valid or test. Neither is a setting of RecBole's.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 benchmarks/.recbole-venv/bin/python \
        benchmarks/recbole/run_recbole.py --model SASRec --paper --eval-mode uni100 \
        --split-from /tmp/loo --epochs 200 --seed 0  # after: advrec prepare --split loo:keep-short

A CTR dataset (one with a ``label`` column), or ``--ctr`` on RecBole's own split, runs RecBole's
context-aware setup instead: the model's own defaults (no embedding 64), user age/gender/occupation
and item release_year/class as features, labelled evaluation (``mode: labeled``) by AUC and
LogLoss, early stopping on valid AUC, no negative sampling. With ``--split-from`` the given labels
are used as they are (``threshold: null``); with ``--ctr`` RecBole labels ``rating >= 4`` as a
click (``threshold: {rating: 4}``) and splits 8:1:1 at random over all rows (its ``group_by:
null`` default for CTR; ``--set`` an ``eval_args`` with ``group_by: user`` for a per-user split).

``--set KEY=VALUE`` (repeatable, VALUE parsed as YAML) overrides any RecBole config entry, e.g.
for SASRec: ``--model SASRec --set 'train_neg_sample_args=null' --set 'eval_args={split: {LS:
valid_and_test}, order: TO, group_by: user, mode: full}'``. Overrides are applied last.

    benchmarks/.recbole-venv/bin/python benchmarks/recbole/run_recbole.py --model DeepFM \
        --split-from /tmp/ctr/prepared --seed 2020      # after: advrec prepare --label-threshold 4
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# RecBole 1.2.1 calls torch.load() on its own checkpoints without weights_only=False.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

DATASET = "ml-100k"
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / DATASET / "recbole"
METRICS = ["Recall", "NDCG", "Hit", "MRR"]
PARTS = ["train", "valid", "test"]
CTR_FEATURES = {"user": ["user_id", "age", "gender", "occupation"],
                "item": ["item_id", "release_year", "class"]}
# RecBole's field names for ml-100k (USER_ID_FIELD, ITEM_ID_FIELD, ITEM_ID_FIELD + LIST_SUFFIX)
USER, ITEM, ITEM_LIST = "user_id:token", "item_id:token", "item_id_list:token_seq"
# SASRec as published (Kang & McAuley, ICDM 2018) in RecBole 1.2.1's terms: advrec's
# jobs/configs/sasrec-paper.yaml for MovieLens (dim 50, 2 blocks, 1 head, dropout 0.2, max_len
# 200, ReLU feed-forward, LayerNorm eps 1e-8, Adam lr 1e-3, batch 128, evaluated every 20
# epochs, the best evaluation kept; epochs from --epochs, protocol from --eval-mode). Where
# RecBole cannot follow the paper:
# - loss: RecBole's SASRec has CE (over all items) or BPR, no BCE; BPR against one uniform
#   negative per target is the nearest (the same positive/negative pair, -log σ(s⁺ - s⁻) instead
#   of -log σ(s⁺) - log(1 - σ(s⁻))), and the negative only avoids the target itself
#   (RepeatableSampler), not the user's other items;
# - Adam: RecBole's is torch's with betas (0.9, 0.999), not configurable; the paper's (0.9, 0.98);
# - init: RecBole draws every weight from N(0, initializer_range=0.02), not Glorot;
# - training rows: RecBole trains on every prefix of every history (up to max_len items before
#   each target), SASRec on one sequence per user, its last max_len + 1 items.
PAPER_SASREC = {
    "hidden_size": 50,
    "inner_size": 50,
    "n_layers": 2,
    "n_heads": 1,
    "hidden_dropout_prob": 0.2,
    "attn_dropout_prob": 0.2,
    "hidden_act": "relu",
    "layer_norm_eps": 1e-8,
    "MAX_ITEM_LIST_LENGTH": 200,
    "loss_type": "BPR",
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
    "train_batch_size": 128,
    "learner": "adam",
    "learning_rate": 1e-3,
    "eval_step": 20,  # advrec's train.eval_every; RecBole caps it at epochs
    "valid_metric": "NDCG@10",
    "topk": [10, 20],
    # leave-one-out by time on RecBole's own split; with --split-from only the order is used
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user"},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="BPR", help="RecBole model name (default: BPR)")
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="directory holding ml-100k.inter/.user/.item (default: %(default)s)")
    p.add_argument("--split-from", metavar="DIR", default=None,
                   help="an advrec prepared dataset: use exactly its train/valid/test rows "
                        "(CTR setup when it has labels)")
    p.add_argument("--ctr", action="store_true",
                   help="CTR on RecBole's own split: rating >= 4 is a click, AUC/LogLoss")
    p.add_argument("--paper", action="store_true",
                   help="SASRec as published (PAPER_SASREC; only with --model SASRec)")
    p.add_argument("--eval-mode", choices=["full", "uni100"], default=None,
                   help="ranking protocol of valid and test: all items or the target against "
                        "100 uniform negatives (default: full; not for CTR)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--epochs", type=int, default=300, help="max epochs (default: 300)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra RecBole config entry, VALUE parsed as YAML (repeatable)")
    p.add_argument("--log-level", default="INFO", help="RecBole's logging level on stderr")
    return p.parse_args(argv)


def link_data(src: Path, root: Path, skip: tuple[str, ...] = ()) -> Path:
    """Symlink the atomic files of ``src`` into ``root/ml-100k``; return ``root`` (RecBole's data_path).

    ``skip`` names the suffixes left out (``.inter``: the interactions come from ``--split-from``;
    ``.item``: the sequential layout writes advrec's item vocabulary instead).
    """
    files = sorted(src.glob(f"{DATASET}.*"))
    if ".inter" not in skip and not any(f.name == f"{DATASET}.inter" for f in files):
        sys.exit(f"run_recbole: no {DATASET}.inter in {src}")
    dst = root / DATASET
    dst.mkdir(parents=True)
    for f in files:
        if f.suffix not in skip:
            (dst / f.name).symlink_to(f.resolve())
    return root


def write_split(prepared: Path, dst: Path,
                max_len: int | None = None) -> tuple[bool, dict[str, int]]:
    """Write the parts of the advrec dataset ``prepared`` as ``dst/ml-100k.<part>.inter``.

    Indices go back to raw ids through ``users.parquet``/``items.parquet``; ``rating`` and
    ``timestamp`` are written as they are, and ``label`` (a CTR dataset) as ``label:float``.
    Returns whether the dataset is CTR (has labels) and the number of rows of each part.

    ``max_len`` (a sequential model's ``MAX_ITEM_LIST_LENGTH``) writes the layout of RecBole's
    sequential augmentation instead (`sequence_rows`), plus ``dst/ml-100k.item`` with advrec's
    items, so that RecBole ranks exactly advrec's catalogue; the counts returned are then the
    target rows that advrec's parts imply (`implied_targets`).
    """
    import numpy as np

    try:
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas.read_parquet needs it)
    except ImportError:
        sys.exit("run_recbole: --split-from reads Parquet: "
                 "pip install pyarrow==17.0.0 into the RecBole venv")
    if not (prepared / "meta.json").is_file():
        sys.exit(f"run_recbole: {prepared} is not an advrec prepared dataset (no meta.json)")
    raw = {key: pd.read_parquet(prepared / f"{key}s.parquet").sort_values("index")
           for key in ("user", "item")}
    for key, vocab in raw.items():
        if not (vocab["index"].to_numpy() == np.arange(len(vocab))).all():
            sys.exit(f"run_recbole: {prepared}/{key}s.parquet indices are not 0..n-1")
    columns = {"rating": "rating:float", "timestamp": "timestamp:float", "label": "label:float"}
    ctr, counts, parts = False, {}, {}
    for part in PARTS:
        df = pd.read_parquet(prepared / f"{part}.parquet")
        out = pd.DataFrame({
            USER: raw["user"]["raw_id"].to_numpy()[df["user"].to_numpy()],
            ITEM: raw["item"]["raw_id"].to_numpy()[df["item"].to_numpy()],
        })
        for col, header in columns.items():
            if col in df:
                out[header] = df[col].to_numpy()
        ctr = "label" in df
        counts[part] = len(out)
        parts[part] = out
    if max_len is not None:
        if ctr:
            sys.exit(f"run_recbole: {prepared} is a CTR dataset (it has labels): "
                     "a sequential model ranks the next item")
        counts = implied_targets(parts)
        parts = sequence_rows(parts, max_len)
        pd.DataFrame({ITEM: raw["item"]["raw_id"]}).to_csv(
            dst / f"{DATASET}.item", sep="\t", index=False)
    for part, out in parts.items():
        out.to_csv(dst / f"{DATASET}.{part}.inter", sep="\t", index=False)
    return ctr, counts


def implied_targets(parts: dict[str, pd.DataFrame]) -> dict[str, int]:
    """How many target rows RecBole's sequential augmentation makes of advrec's ``parts``: one
    per train row but each user's first, one per valid and per test row."""
    train = parts["train"]
    return {"train": len(train) - train[USER].nunique(),
            "valid": len(parts["valid"]), "test": len(parts["test"])}


def sequence_rows(parts: dict[str, pd.DataFrame], max_len: int) -> dict[str, pd.DataFrame]:
    """advrec's parts as the rows of RecBole's ``SequentialDataset.data_augmentation``.

    Each row keeps the target's columns and adds ``item_id_list:token_seq``, the user's items
    before it, the last ``max_len`` of them, oldest first (``item_length`` is RecBole's to count).
    train: every train item of a user but the first, after the train items before it; valid: the
    valid item after all the user's train items; test: the test item after the train and valid
    items. A user's items are in the parts' order (advrec's: by time, ties by item), the order
    advrec's SASRec reads them. RecBole's own augmentation also adds ``rating_list`` and
    ``timestamp_list``, which SASRec does not read: left out.

    Exits naming the user where a valid or test part has two rows of one user (RecBole's
    metrics are then per row, advrec's per user) or a row has no item before it (RecBole's
    SASRec reads the output at ``item_length - 1``).
    """
    history: dict[str, list[str]] = {}
    out = {}
    for part in PARTS:
        df = parts[part]
        users, items = df[USER].to_numpy(), df[ITEM].to_numpy()
        if part != "train":
            twice = df[USER].duplicated()
            if twice.any():
                sys.exit(f"run_recbole: user {users[twice.to_numpy()][0]} has more than one {part} "
                         "item: a sequential model wants a leave-one-out split")
        keep, lists = [], []
        for row, (user, item) in enumerate(zip(users, items)):
            seen = history.setdefault(user, [])
            if seen:
                keep.append(row)
                lists.append(" ".join(seen[-max_len:]))
            elif part != "train":
                sys.exit(f"run_recbole: user {user} has a {part} item but no item before it")
            if part == "train":
                seen.append(item)
        if part != "train":  # valid items join the history only after every valid row
            for user, item in zip(users, items):
                history[user].append(item)
        rows = df.iloc[keep].reset_index(drop=True)
        rows.insert(2, ITEM_LIST, lists)
        out[part] = rows
    return out


def model_defaults(model: str) -> list[str]:
    """The keys of RecBole's own defaults for ``model`` (``recbole/properties/model/<model>.yaml``)."""
    import recbole
    import yaml

    path = Path(recbole.__file__).parent / "properties" / "model" / f"{model}.yaml"
    if not path.is_file():
        return []
    return list(yaml.safe_load(path.read_text()) or {})


def main(argv=None) -> int:
    args = parse_args(argv)
    import yaml

    overrides = {}
    for kv in args.overrides:
        key, sep, value = kv.partition("=")
        if not sep:
            sys.exit(f"run_recbole: --set wants KEY=VALUE, got {kv!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    if args.paper and args.model != "SASRec":
        sys.exit(f"run_recbole: --paper is SASRec's settings, not {args.model}'s")
    # resolved now: the run works inside a temporary directory
    split_from = Path(args.split_from).resolve() if args.split_from else None

    t_start = time.perf_counter()
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import ModelType, get_model, get_trainer, init_logger, init_seed

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="recbole-") as tmp:
        tmp = Path(tmp)
        # a sequential model's parts are written once its MAX_ITEM_LIST_LENGTH is known (below)
        sequences = split_from is not None and get_model(args.model).type == ModelType.SEQUENTIAL
        skip = (".inter", ".item") if sequences else (".inter",) if split_from else ()
        data_root = link_data(Path(args.data), tmp / "data", skip)
        ctr, split_counts = args.ctr, None
        if split_from and not sequences:
            ctr, split_counts = write_split(split_from, data_root / DATASET)
        if ctr and args.eval_mode:
            sys.exit("run_recbole: --eval-mode ranks items; a CTR run is evaluated by AUC/LogLoss")
        eval_mode = args.eval_mode or "full"
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
                          "group_by": "user", "mode": eval_mode},
            "metrics": METRICS,
            "topk": [10],
            "valid_metric": "NDCG@10",
            "valid_metric_bigger": True,
            "save_dataset": False,
            "save_dataloaders": False,
            "log_wandb": False,
        }
        if ctr:
            # RecBole's context-aware setup; the model's own embedding_size
            del config_dict["embedding_size"], config_dict["topk"]
            config_dict.update({
                "LABEL_FIELD": "label",
                "threshold": None if args.split_from else {"rating": 4},
                "load_col": {"inter": ["user_id", "item_id",
                                       "label" if args.split_from else "rating"],
                             **CTR_FEATURES},
                "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO",
                              "group_by": None, "mode": "labeled"},
                "metrics": ["AUC", "LogLoss"],
                "valid_metric": "AUC",
                "train_neg_sample_args": None,
                "metric_decimal_place": 6,
            })
        if args.paper:
            del config_dict["embedding_size"]  # SASRec's is hidden_size
            config_dict.update(PAPER_SASREC)
            config_dict["eval_args"] = {**PAPER_SASREC["eval_args"], "mode": eval_mode}
            # never stops early (RecBole stops after stopping_step evaluations without a better
            # one): the paper trains every epoch, advrec's config has patience 0
            config_dict["stopping_step"] = args.epochs
        if split_from:
            # fixed parts: RecBole skips filtering and splitting (eval_args.split is unused)
            config_dict["benchmark_filename"] = PARTS
        if sequences:
            # pre-built sequences, read as they are (SequentialDataset._benchmark_presets); the
            # lists share item_id's vocabulary, which is advrec's (the written .item file)
            config_dict["eval_args"] = {**config_dict["eval_args"], "order": "TO"}
            config_dict["load_col"] = {
                "inter": ["user_id", "item_id", "item_id_list", "rating", "timestamp"],
                "item": ["item_id"]}
            config_dict["alias_of_item_id"] = ["item_id_list"]
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
            if sequences:
                ctr, split_counts = write_split(split_from, data_root / DATASET,
                                                max_len=config["MAX_ITEM_LIST_LENGTH"])
            init_seed(config["seed"], config["reproducibility"])
            init_logger(config)  # StreamHandler -> stderr, FileHandler -> tmp/log
            logger = logging.getLogger()
            logger.info(config)

            dataset = create_dataset(config)
            logger.info(dataset)
            train_data, valid_data, test_data = data_preparation(config, dataset)
            if split_counts:
                got = [len(d._dataset) for d in (train_data, valid_data, test_data)]
                if got != list(split_counts.values()):
                    sys.exit(f"run_recbole: RecBole's parts have {got} rows, not {split_counts}")
            if sequences:
                num_items = json.loads((split_from / "meta.json").read_text())["num_items"]
                if dataset.item_num - 1 != num_items:  # RecBole's item 0 is padding
                    sys.exit(f"run_recbole: RecBole ranks {dataset.item_num - 1} items, "
                             f"advrec {num_items}")

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
    hparams = ["embedding_size", *model_defaults(args.model), "train_batch_size", "learner",
               "learning_rate", "weight_decay", "stopping_step"]
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        hparams += ["MAX_ITEM_LIST_LENGTH", "train_neg_sample_args", "eval_step"]
    out = {
        "model": args.model,
        "seed": args.seed,
        "task": "ctr" if ctr else "ranking",
        "split_from": args.split_from,
        "split_rows": split_counts,
        "eval_mode": None if ctr else config["eval_args"]["mode"],
        "hparams": {k: config[k] for k in dict.fromkeys(hparams)},
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
