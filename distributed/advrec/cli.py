"""The ``advrec`` console script: prepare, synth, poison, detect, train, tune, evaluate,
recommend, export, plot, submit, run, jobs, demo.

Every command turns bad input into one line on stderr (``advrec: error: ...``) and exit code 2;
SIGINT and SIGTERM into one line and exit code 130 or 143, after removing temporary outputs.
Commands import their heavy modules (torch, Ray) inside, so ``advrec --help`` answers at once.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from advrec import io
from advrec.config import DataConfig
from advrec.errors import AdvrecError, Interrupted, shown


def _eps(text: str) -> list[float]:
    """Comma-separated budgets, finite numbers >= 0 (`--eps 0,0.1,0.5`): nan or inf would
    report the metrics of a NaN model as if valid."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AdvrecError(f"--eps: expected comma-separated numbers, got {shown(text)}") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise AdvrecError(f"--eps: expected finite numbers >= 0, got {shown(text)}")
    return values


def _budgets(text: str) -> list[int]:
    """Comma-separated numbers of changed inputs (history items, feature fields), integers
    >= 0 (`--budget 0,1,2`)."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or not all(v.isdigit() for v in values):
        raise AdvrecError(f"--budget: expected comma-separated integers >= 0, got {shown(text)}")
    return sorted({int(v) for v in values})


def _attacks(text: str) -> list[str]:
    """Comma-separated robustness attacks (`--attack fgm,pgd`)."""
    from advrec.config import ATTACKS, BUDGET_ATTACKS

    known = (*ATTACKS, *BUDGET_ATTACKS)
    attacks = [a for a in text.split(",") if a]
    choose = f"{', '.join(known[:-1])} or {known[-1]}"
    if not attacks:
        raise AdvrecError(f"--attack: name {choose} (comma-separated)")
    for a in attacks:
        if a not in known:
            raise AdvrecError(f"--attack: unknown attack {shown(a)} (choose {choose})")
    return attacks


def _int_from(least: int, kind: str) -> Callable[[str], int]:
    """An argparse type: a ``kind`` integer, i.e. one >= ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got '{text}'")
        return value
    return parse


def _number_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number in [low, high] (nan is none)."""
    def parse(text: str) -> float:
        expected = f"expected a number in [{low:g}, {high:g}], got '{text}'"
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(expected) from None
        if not low <= value <= high:  # nan fails too
            raise argparse.ArgumentTypeError(expected)
        return value
    return parse


_cosine = _number_in(-1.0, 1.0)  # a cosine similarity
_unit = _number_in(0.0, 1.0)
_seconds = _number_in(0.001, 1e9)  # a wait or a timeout
_positive_int = _int_from(1, "positive")
_non_negative_int = _int_from(0, "non-negative")
ADDRESS_HELP = ("Ray cluster for scaling.num_workers >= 1 (default: RAY_ADDRESS, else a local "
                "Ray instance)")
JOBS_ADDRESS_HELP = ("the cluster's job server, http://HOST:8265 (default: RAY_API_SERVER_ADDRESS, "
                     "else an http RAY_ADDRESS, else http://127.0.0.1:8265)")


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated names: columns (`--user-features age,gender`) or raw ids
    (`--target-items 50,181`); an empty one (``1,,2``) is a typo, refused."""
    names = tuple(n.strip() for n in text.split(","))
    if not any(names) or not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, none empty, got "
                                         f"'{text}'")
    return names


# --- commands ---------------------------------------------------------------------------------

def cmd_prepare(args: argparse.Namespace) -> None:
    from advrec.data import ColumnMap, prepare
    from advrec.data.source import buckets

    columns = ColumnMap(user=args.user_col, item=args.item_col, rating=args.rating_col,
                        timestamp=args.time_col, sep=args.sep, label=args.label_col,
                        user_features=args.user_features, item_features=args.item_features)
    meta = prepare(args.input, args.format, args.output, split=args.split,
                   min_rating=args.min_rating, kcore=args.kcore, seed=args.seed, columns=columns,
                   label_threshold=args.label_threshold,
                   buckets=buckets(args.user_buckets, args.item_buckets))
    counts = meta["counts"]
    print(f"prepared {args.output}: {meta['num_users']} users, {meta['num_items']} items, "
          f"train/valid/test = {counts['train']}/{counts['valid']}/{counts['test']}")
    for kind, report in meta.get("hashing", {}).items():
        print(f"{kind} ids hashed: {report['ids']} ids into {report['buckets']} rows, "
              f"collision rate {report['collision_rate']:.2%}")


def cmd_synth(args: argparse.Namespace) -> None:
    from advrec.data import synth
    from advrec.data.synth import synth_days

    if args.days is None:
        if args.drift is not None:
            raise AdvrecError("--drift: preferences drift from day to day; give --days too")
        synth(args.users, args.items, args.interactions, args.output, seed=args.seed)
        print(f"wrote a synthetic log of {args.interactions} interactions to {args.output}")
        return
    summary = synth_days(args.users, args.items, args.interactions, args.output, args.days,
                         drift=args.drift or 0.0, seed=args.seed)
    last = summary["per_day"][-1]
    print(f"wrote a synthetic log of {args.interactions} interactions over {args.days} "
          f"day{'s' if args.days > 1 else ''} "
          f"({summary['per_day'][0]['date']} to {last['date']}, one dt=DATE/ partition each) "
          f"to {args.output}")


def cmd_poison(args: argparse.Namespace) -> None:
    from advrec.poisoning.poison import parse_fake_users, poison

    if args.targets is not None and args.target_items is not None:
        raise AdvrecError("--targets and --target-items exclude each other: pick targets or "
                          "name them")
    meta = poison(args.data, args.output, args.attack, parse_fake_users(args.fake_users),
                  filler=args.filler, targets=5 if args.targets is None else args.targets,
                  target_items=None if args.target_items is None else list(args.target_items),
                  seed=args.seed, force=args.force)
    report = meta["poison"]
    rows = report["fake_users"] * (report["filler"] + len(report["targets"]))
    print(f"poisoned {args.output}: {report['fake_users']} fake users ({report['attack']}, "
          f"{report['filler']} fillers + {len(report['targets'])} targets each) beside "
          f"{report['genuine_users']} genuine ones, {rows} training rows added; targets in "
          f"{io.join(args.output, 'targets.json')}")


def _resuming(args: argparse.Namespace, what: str) -> bool:
    """Whether ``--resume`` continues ``what`` (then ``args.output`` is its directory), or
    ``--output`` starts one; the two exclude each other, and a resumed one takes no config."""
    if args.resume:
        if args.config or args.output or args.overrides:
            raise AdvrecError(f"--resume continues a {what} as it was configured: give no "
                              "--config, --output or overrides with it")
        args.output = args.resume
        return True
    if not args.output:
        raise AdvrecError(f"--output is required (or --resume DIR to continue a {what})")
    return False


def cmd_train(args: argparse.Namespace) -> None:
    from advrec.config import load_config
    from advrec.config.policy import TARGET, target_metrics

    resuming = _resuming(args, "run")
    if resuming and args.targets:
        raise AdvrecError("--targets: a resumed run measures the target items it started "
                          "with; give no --targets with --resume")
    if resuming and args.init_from is not None:
        raise AdvrecError("--init-from: a resumed run continues from its own checkpoint; give "
                          "no --init-from with --resume")
    if not resuming:  # a bad config fails before torch and Ray are imported (seconds)
        # as an override (a JSON string is YAML), so the config's rules see it
        init = ([f"train.init_from={json.dumps(args.init_from)}"]
                if args.init_from is not None else [])
        cfg = load_config(args.config, [*args.overrides, *init])
        if args.targets:
            cfg.eval.targets = args.targets
    from advrec.report import format_table, headline
    from advrec.train import read_run, resume_training, run_training

    # what a warm start matched (run.json), read while the run is there: a finished
    # replacement moves away
    if resuming:
        cfg = read_run(args.resume)[0]
        warm = io.read_json(io.join(args.resume, "run.json")).get("init_from")
        metrics = resume_training(args.resume, progress=not args.quiet, address=args.address)
    else:
        metrics = run_training(cfg, args.output, progress=not args.quiet, address=args.address)
        warm = (io.read_json(io.join(args.output, "run.json")).get("init_from")
                if cfg.train.init_from else None)
    rows = [{"split": s, **{m: metrics[s][m] for m in headline(cfg)}} for s in ("valid", "test")]
    columns = ["split", *headline(cfg)]
    if "target" in metrics:  # T-HR@K and T-NDCG@K of the target items
        for row in rows:
            row.update({f"{TARGET}{m}": v for m, v in metrics["target"][row["split"]].items()})
        columns += target_metrics(cfg.eval.target_k)
    print(format_table(rows, columns))
    if warm:
        fresh = warm["user"]["new"] + warm["item"]["new"]
        print(f"warm-started from {warm['run']}: it knew {warm['user']['known']} of "
              f"{sum(warm['user'].values())} users and {warm['item']['known']} of "
              f"{sum(warm['item'].values())} items" + ("; the others started fresh" if fresh
                                                         else ""))
    print(f"run written to {args.output} (best epoch {metrics['best_epoch']})")


def cmd_stream(args: argparse.Namespace) -> None:
    from advrec.config import load_config
    from advrec.stream.windows import parse_window

    if not args.output:
        raise AdvrecError("--output is required (the stream directory; an existing stream "
                          "there continues)")
    if args.window is not None:  # a bad window or config fails before torch and Ray load
        parse_window(args.window)
    cfg = load_config(args.config, args.overrides)
    from advrec.report import format_table
    from advrec.stream import run_stream

    history = run_stream(cfg, args.output, args.window, args.update, args.replay, args.keep,
                         progress=not args.quiet, address=args.address, follow=args.follow,
                         poll=args.poll, idle=args.idle, expire=args.expire_after)
    metric = f"ndcg@{max(cfg.eval.ks)}"
    rows = [{"window": r["window"], "rows": r["rows"], "new users": r.get("new_users", 0),
             "new items": r.get("new_items", 0), "users": r.get("users", 0),
             "items": r.get("items", 0),
             f"prequential {metric}": r.get("prequential", {}).get(metric, float("nan")),
             "train s": r.get("train_s", float("nan"))} for r in history]
    print(format_table(rows, list(rows[0])) if rows else "no window")
    latest = history[-1]["model"] if history else None
    print(f"stream written to {args.output}" + (f" (latest: windows/{latest})" if latest else ""))


def cmd_tune(args: argparse.Namespace) -> None:
    from advrec.config import load_raw
    from advrec.report import format_table
    from advrec.tune import resume_tune, run_tune

    if _resuming(args, "search"):
        summary = resume_tune(args.resume, progress=not args.quiet, address=args.address)
    else:
        summary = run_tune(load_raw(args.config, args.overrides), args.output,
                           progress=not args.quiet, address=args.address)
    rows = summary["rows"]
    print(format_table(rows, list(rows[0])))
    print(f"{len(summary['front'])} trials on the Pareto front; epochs run {summary['epochs']} "
          f"of {summary['budget']}; best trial {summary['best']['trial']}")
    print(f"wrote {io.join(args.output, 'results.csv')}, pareto.csv, pareto.png and best.yaml")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from advrec.config import BUDGET_ATTACKS
    from advrec.config.policy import BEYOND, target_metrics

    flag_attacks = None if args.attack is None else _attacks(args.attack)
    flag_eps = None if args.eps is None else _eps(args.eps)
    budgets = None if args.budget is None else _budgets(args.budget)
    swapping = [a for a in flag_attacks or () if a in BUDGET_ATTACKS]
    if args.budget is not None and not swapping:
        raise AdvrecError("--budget: only jsma-items and jsma-fields (which change discrete "
                          "inputs) take it; add one to --attack")
    ignored = next((flag for flag in ("eps", "l0", "steps") if getattr(args, flag)), None)
    if flag_attacks is not None and flag_attacks == swapping and ignored:
        # every attack named changes discrete inputs, by the budget (one round per changed
        # input): ε, l0 and the steps would be ignored
        verb = "change" if len(set(swapping)) > 1 else "changes"
        raise AdvrecError(f"--{ignored}: {', '.join(swapping)} {verb} discrete inputs, by "
                          "--budget, not embeddings; add fgm, pgd or jsma to --attack")
    if args.similarity is not None and "jsma-items" not in swapping:
        raise AdvrecError("--similarity: only jsma-items (which swaps history items) takes "
                          "it; add jsma-items to --attack")
    if args.targets is not None and args.target_items is not None:
        raise AdvrecError("--targets and --target-items exclude each other: measure a "
                          "targets.json, or attack toward the items named")
    # bad flags fail above, before torch and Ray are imported (seconds)
    from advrec.metrics.plots import curve_points
    from advrec.report import (
        ROBUSTNESS_FILE,
        ROBUSTNESS_PLOT,
        TARGETED,
        evaluate_run,
        format_table,
        headline,
    )
    from advrec.train import read_run

    cfg = read_run(args.run)[0]
    if args.l0 is not None and args.l0 > cfg.model.dim:
        raise AdvrecError(f"--l0 {args.l0}: above the run's model.dim={cfg.model.dim} (JSMA "
                          "changes at most l0 coordinates of each embedding row)")
    # the run's own eval section gives what the flags leave out
    attacks = cfg.eval.attacks if flag_attacks is None else flag_attacks
    eps = cfg.eval.eps if flag_eps is None else flag_eps
    merged = evaluate_run(args.run, attacks, eps, args.steps, progress=not args.quiet,
                          workers=args.workers, address=args.address, targets=args.targets,
                          l0=args.l0, beyond=args.beyond or None, budgets=budgets,
                          similarity=args.similarity,
                          target_items=None if args.target_items is None
                          else list(args.target_items))
    # a table per kind of curve: against ε, and against the budget (changed discrete inputs)
    for axis, names in (("eps", [a for a in attacks if a not in BUDGET_ATTACKS]),
                        ("budget", [a + (TARGETED if args.target_items else "")
                                    for a in swapping])):
        points = {a: curve_points(merged[a]) for a in names}
        rows = [{"attack": a, axis: float(x) if axis == "eps" else int(x), **values}
                for a in names for x, values in sorted(points[a].items(),
                                                       key=lambda p: float(p[0]))]
        # the target items' metrics where every point has them (a curve merged with one
        # measured without targets may lack them)
        targets = [m for m in target_metrics(cfg.eval.target_k) if all(m in r for r in rows)]
        # and the beyond-accuracy metrics at the first K, where every point has them
        beyond = [m for m in (f"{name}@{cfg.eval.ks[0]}" for name in BEYOND)
                  if rows and all(m in r for r in rows)]
        if rows:
            print(format_table(rows, ["attack", axis, *headline(cfg), *targets]))
        if beyond:
            print(format_table(rows, ["attack", axis, *beyond]))
    print(f"wrote {io.join(args.run, ROBUSTNESS_FILE)} and {io.join(args.run, ROBUSTNESS_PLOT)}")


def cmd_recommend(args: argparse.Namespace) -> None:
    if args.pairs is not None:
        lists = [f"--{flag.replace('_', '-')}" for flag in ("users", "k", "keep_seen", "unknown",
                                                             "workers")
                 if getattr(args, flag) not in (None, False)]
        if lists:
            raise AdvrecError(f"{lists[0]}: --pairs scores the pairs given, it makes no top-K "
                              "lists")
        from advrec.serve.recommend import score_pairs

        count = score_pairs(args.run, args.pairs, args.output, args.batch_users)
        print(f"wrote the scores of {count} pairs to {args.output}")
        return
    from advrec.serve.recommend import recommend_run

    done = recommend_run(args.run, args.output, args.users or "all", args.k or 10,
                         args.keep_seen, args.unknown or "popular", args.batch_users,
                         workers=args.workers, address=args.address, progress=not args.quiet)
    cold = (f"; {done['unknown']} of them unknown to the run got its most popular items"
            if done["unknown"] else "")
    print(f"wrote {done['rows']} recommendations for {done['users']} users to "
          f"{args.output}{cold}")


def cmd_export(args: argparse.Namespace) -> None:
    from advrec.serve.export import export_run

    manifest = export_run(args.run, args.output, args.format)
    print(f"wrote {args.output}: {manifest['ranker']} ({args.format}, inputs "
          f"{', '.join(manifest['inputs'])}), {len(manifest['tables'])} tables, manifest.json")


def cmd_plot(args: argparse.Namespace) -> None:
    from advrec.metrics.plots import plot_robustness, plot_targets
    from advrec.report import headline, read_robustness, read_target
    from advrec.train import read_run

    labels = [run.rstrip("/").rsplit("/", 1)[-1] for run in args.runs]
    if args.target:
        if args.metric:
            raise AdvrecError("--metric: --target plots T-HR@K and T-NDCG@K; give one or the "
                              "other")
        sections = dict(zip(labels, (read_target(run) for run in args.runs)))
        k = sections[labels[0]]["k"]
        for run, label in zip(args.runs, labels):
            if sections[label]["k"] != k:  # bars side by side must measure the same thing
                raise AdvrecError(f"{run}: its target metrics are at K={sections[label]['k']}, "
                                  f"those of {args.runs[0]} at K={k}; plot runs of one "
                                  "eval.target_k")
        plot_targets(sections, args.output)
        print(f"wrote {args.output}")
        return
    curves = {label: read_robustness(run) for label, run in zip(labels, args.runs)}
    # by default the first run's headline metric: ndcg@K, auc or click/auc
    metrics = args.metric or headline(read_run(args.runs[0])[0])[:1]
    for run in args.runs:  # every run has a curve of every metric plotted
        read_robustness(run, metrics)
    plot_robustness(curves, metrics, args.output)
    print(f"wrote {args.output}")


def cmd_submit(args: argparse.Namespace) -> int:
    from advrec.submit import connect_jobs, exit_code, follow, load_job, submit

    job = load_job(args.spec, args.overrides)  # a bad spec or config fails before any contact
    client, url = connect_jobs(args.address)
    submission_id = submit(client, job)
    print(f"submitted {submission_id} to {url}")
    print(f"outputs: {job.output_url(submission_id)}")
    if not args.wait:
        print(f"follow it with `advrec jobs logs {submission_id} --follow`")
        return 0
    status = follow(client, submission_id)
    print(f"job {submission_id} {status.value}; outputs: {job.output_url(submission_id)}")
    return exit_code(status.value)


def cmd_run(args: argparse.Namespace) -> int:
    from advrec.submit import load_job, new_submission_id

    job = load_job(args.spec, args.overrides)
    submission_id = new_submission_id(job)
    job.write_config(submission_id)
    print(f"running {submission_id}; outputs: {job.output_url(submission_id)}", flush=True)
    return main(job.arguments(submission_id))  # exactly what a submitted job's entrypoint runs


def cmd_jobs(args: argparse.Namespace) -> int:
    from advrec.report import format_table
    from advrec.submit import connect_jobs, exit_code, follow, job_info, job_rows

    if args.action != "list" and not args.id:  # before any contact: a bad line fails at once
        raise AdvrecError(f"jobs {args.action}: name a job id (see `advrec jobs list`)")
    client, url = connect_jobs(args.address)
    if args.action == "list":
        rows = job_rows(client)
        print(format_table(rows, ["id", "status", "started", "output"]) if rows
              else f"no jobs on {url}")
        return 0
    if args.action == "status":
        info = job_info(client, args.id)
        for key, value in info.items():
            print(f"{key}: {value}")
        return exit_code(info["status"])  # as `submit --wait`
    if args.action == "logs":
        if args.follow:
            return exit_code(follow(client, args.id).value)
        job_info(client, args.id)  # an unknown id is an error, not empty logs
        sys.stdout.write(client.get_job_logs(args.id))
        return 0
    job_info(client, args.id)
    stopped = client.stop_job(args.id)
    print(f"{args.id}: {'stop requested' if stopped else 'already ended'}")
    return 0


def _threshold(text: str) -> float:
    """A finite suspicion score (`--threshold 3.5`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def cmd_detect(args: argparse.Namespace) -> None:
    from advrec.poisoning.detect import Selection, detect

    selection = None
    if args.remove is not None or args.threshold is not None:
        selection = Selection(top=args.remove, threshold=args.threshold)
    report = detect(args.data, args.output, selection)
    fakes, removed = report["against_fakes"], report["removed"]
    if fakes:
        print(f"against the {fakes['fakes']} known fakes: ROC-AUC {fakes['roc_auc']:.4f}, "
              f"precision {fakes['precision']:.4f} and recall {fakes['recall']:.4f} of the "
              f"{fakes['flagged']} {fakes['of']}")
    scores = io.join(args.output, "scores.parquet")
    print(f"scored {report['users']} users into {scores}" + (
        f"; {args.output} is the dataset without the train rows of {len(removed['users'])} "
        f"users ({removed['rows']} rows)" if removed else ""))


def cmd_demo(args: argparse.Namespace) -> None:
    from advrec.demo import run_demo

    run_demo(args.output, source=args.source, epochs=args.epochs, progress=not args.quiet)


# --- parser -----------------------------------------------------------------------------------

def _run_arguments(p: argparse.ArgumentParser, *, config: str, output: str,
                   resume_as: str, resume: str, quiet: str, example: str) -> None:
    """The arguments of a command that starts or resumes a run of a config (train, tune)."""
    p.add_argument("--config", help=config)
    p.add_argument("--output", help=output)
    p.add_argument("--resume", metavar=resume_as, help=resume)
    p.add_argument("--quiet", action="store_true", help=quiet)
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"config overrides, e.g. {example}")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one ``advrec: error:`` line, as every other bad input
    (argparse's own prints the usage block, then ``advrec CMD: error: ...``); exit code 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("advrec").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"advrec: error: {where}{message} (see `{self.prog} --help`)\n")


RANKING_RUN_HELP = ("run directory written by `advrec train` (a ranking model: mf, neumf, sasrec, "
                    "twotower)")


def _add_worker_flags(p: argparse.ArgumentParser, sharing: str) -> None:
    """--workers, --address and --quiet of a command that runs on a trained run's workers."""
    p.add_argument("--workers", type=_non_negative_int, default=None,
                   help=f"Ray Train workers sharing {sharing} (default: the run's "
                   "scaling.num_workers; 0 = this process)")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="advrec", description="Adversarial training for embedding-based recommenders, on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="turn a raw log into a training dataset (Parquet splits)")
    p.add_argument("--input", required=True, help="raw log: path or URL (file, directory or .zip)")
    p.add_argument("--format", required=True,
                   choices=["movielens", "recbole", "sasrec", "csv", "parquet"])
    p.add_argument("--output", required=True, help="dataset directory: path or URL")
    data = DataConfig.model_fields  # the defaults of a run config's data section, not copies
    p.add_argument("--split", default=data["split"].default,
                   help="random:TRAIN,VALID,TEST per user | loo (leave-one-out by time) | "
                        "loo:keep-short (SASRec's: users under 3 interactions train only) | "
                        "time:FRACTION (global time cut); default %(default)s")
    p.add_argument("--label-threshold", type=float, default=None, metavar="R",
                   help="CTR data: keep every rating, labelled 1 where rating >= R else 0")
    p.add_argument("--min-rating", type=float, default=None,
                   help="keep ratings >= R as implicit positives (default: every rating)")
    p.add_argument("--kcore", type=_non_negative_int, default=data["kcore"].default,
                   help="k-core filter of users and items")
    p.add_argument("--seed", type=int, default=data["seed"].default)
    p.add_argument("--user-col", default="user_id", help="csv/parquet: the user column")
    p.add_argument("--item-col", default="item_id", help="csv/parquet: the item column")
    p.add_argument("--rating-col", default="rating", help="csv/parquet: the rating column")
    p.add_argument("--time-col", default="timestamp", help="csv/parquet: the time column")
    p.add_argument("--sep", default=",", help="csv: the field separator")
    p.add_argument("--label-col", default=None, metavar="NAME",
                   help="CTR data: the log's own 0/1 click column (instead of --label-threshold)")
    p.add_argument("--user-features", type=_names, default=(), metavar="COL,...",
                   help="csv/parquet/recbole: columns carried as user features (first row wins)")
    p.add_argument("--item-features", type=_names, default=(), metavar="COL,...",
                   help="csv/parquet/recbole: columns carried as item features (first row wins)")
    p.add_argument("--user-buckets", type=int, default=0, metavar="N",
                   help="hash the raw user ids into N rows instead of a row per user; meta.json "
                        "reports the collision rate (default: 0, no hashing)")
    p.add_argument("--item-buckets", type=int, default=0, metavar="N",
                   help="as --user-buckets, for the items")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("synth", help="write a deterministic synthetic interaction log (Parquet)")
    p.add_argument("--users", type=_positive_int, required=True)
    p.add_argument("--items", type=_positive_int, required=True)
    p.add_argument("--interactions", type=_positive_int, required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--days", type=_positive_int, metavar="D",
                   help="a log that unfolds over D days, one dt=YYYY-MM-DD/ partition each: half "
                   "the users and items there on day 0, the rest arriving day by day")
    p.add_argument("--drift", type=_unit, metavar="R",
                   help="with --days: how far each user's taste moves per day, 0 (fixed, the "
                   "default) to 1 (new every day)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("poison", help="a copy of a prepared dataset with fake users who push "
                       "target items (shilling, data poisoning)")
    p.add_argument("--data", required=True, help="the clean dataset: path or URL")
    p.add_argument("--output", required=True, help="the poisoned dataset's directory: path or URL")
    p.add_argument("--attack", required=True,
                   help="random | average | bandwagon | segment | surrogate: how the fakes pick "
                        "their filler items")
    p.add_argument("--fake-users", default="0.01", metavar="X",
                   help="a share of the genuine users in (0, 1), e.g. 0.01, or a whole number of "
                        "fakes up to the genuine users, e.g. 50 (default %(default)s)")
    p.add_argument("--filler", type=int, default=None, metavar="N",
                   help="filler items per fake (default: the genuine users' mean training "
                        "profile size)")
    p.add_argument("--targets", type=int, default=None, metavar="K",
                   help="pick K target items among the unpopular ones (default 5)")
    p.add_argument("--target-items", type=_names, default=None, metavar="RAW_ID,...",
                   help="the target items' raw ids, instead of --targets")
    p.add_argument("--seed", type=int, default=0, help="seeds the targets, the fillers, the "
                   "fakes' times and features (default %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="poison an already poisoned dataset: its fakes are dropped and replaced")
    p.set_defaults(func=cmd_poison)

    p = sub.add_parser("train", help="train a model (clean or adversarial) into a run directory")
    _run_arguments(p, config="YAML run config (see jobs/configs/)",
                   output="run directory: path or URL (a finished run there is replaced once the "
                   "new one has finished)",
                   resume_as="RUN", resume="continue the stopped run in RUN from its latest "
                   "checkpoint, exactly as if it had not stopped",
                   quiet="no progress bar", example="adv.eps=0.5 train.epochs=20")
    p.add_argument("--targets", metavar="FILE", help="a targets.json (path or URL) whose items' "
                   "T-HR and T-NDCG every evaluation reports (sets eval.targets; default: the "
                   "dataset's own targets.json, if any)")
    p.add_argument("--init-from", metavar="RUN", help="warm start: begin from the finished run "
                   "RUN's best weights (path or URL; sets train.init_from), matching rows by raw "
                   "user and item id and feature value; new ones start fresh")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("stream", help="train window after window of a log (incremental, "
                       "prequential evaluation, published models)")
    p.add_argument("--config", help="YAML run config (see jobs/configs/); data.source is the "
                   "raw log, replayed in time order")
    p.add_argument("--output", help="stream directory: path; one holding a stream of the same "
                   "settings continues it from its first unfinished window")
    p.add_argument("--window", help="replay the log in windows of days (7d), hours (12h) or a "
                   "number of rows (5000)")
    p.add_argument("--follow", action="store_true", help="instead, follow data.source, a "
                   "directory or object-store prefix of Parquet files: each partition that "
                   "lands (dt=2026-12-01/, or a file at the top) is a window")
    p.add_argument("--poll", type=_seconds, default=None, metavar="S",
                   help="with --follow: seconds between listings (default 60)")
    p.add_argument("--idle", type=_seconds, default=None, metavar="S",
                   help="with --follow: stop once S seconds pass without a new partition "
                   "(default: follow until stopped)")
    p.add_argument("--update", default="incremental", help="incremental (continue each window "
                   "from the last one's model, the default), retrain (from scratch on every row "
                   "so far) or frozen (train on the first window only)")
    p.add_argument("--replay", type=_non_negative_int, default=0, metavar="ROWS",
                   help="older rows an incremental window also trains on, drawn afresh each "
                   "window (against forgetting; default 0)")
    p.add_argument("--keep", type=_non_negative_int, default=0, metavar="N",
                   help="keep the newest N windows' models and datasets (default 0: all)")
    p.add_argument("--expire-after", type=_non_negative_int, default=0, metavar="N",
                   help="an incremental stream frees the table rows of users and items unseen "
                   "for N windows (default 0: never); a returning one starts fresh")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.epochs=2 adv.eps=0.5")
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("tune", help="search config keys (eps, lambda, lr, ...) with Ray Tune")
    _run_arguments(p, config="YAML run config with a tune: section (see jobs/configs/)",
                   output="experiment directory: path or URL (must not exist)",
                   resume_as="DIR", resume="continue the interrupted search in DIR: finished "
                   "trials are kept, the others continue",
                   quiet="no progress table", example="tune.num_samples=16 train.epochs=50")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="ranking quality of a trained run under attack, across eps")
    p.add_argument("--run", required=True, help="run directory written by `advrec train`")
    p.add_argument("--attack", help="fgm, pgd, jsma, jsma-items, jsma-fields, comma-separated "
                   "(default: the run's eval.attacks); jsma-items swaps SASRec's history items, "
                   "jsma-fields changes the feature fields of DeepFM's, DCN-v2's and MMoE's "
                   "examples (two-tower's, and with --target-items any feature model's: each "
                   "user's profile fields), across --budget")
    p.add_argument("--eps", help="comma-separated budgets, e.g. 0,0.1,0.5 "
                   "(default: the run's eval.eps)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="PGD steps, JSMA rounds (default eval.steps)")
    p.add_argument("--l0", type=_positive_int, default=None, help="JSMA's coordinates changed "
                   "per embedding row (default eval.l0, else a tenth of model.dim)")
    p.add_argument("--budget", metavar="B,...", help="jsma-items, jsma-fields: comma-separated "
                   "numbers of history items swapped per user, of feature fields changed per "
                   "example, 0 the clean model (default 0,1,2)")
    p.add_argument("--similarity", type=_cosine, default=None, help="jsma-items: substitutes "
                   "only among items whose embedding has cosine >= this with the item replaced "
                   "(default: any item)")
    p.add_argument("--target-items", type=_names, default=None, metavar="RAW_ID,...",
                   help="jsma-items and jsma-fields promote these items (raw ids) instead of "
                   "demoting each user's held-out items (jsma-fields: by changing each user's "
                   "profile); every point reports their T-HR and T-NDCG")
    p.add_argument("--beyond", action="store_true", help="every point also gets the "
                   "beyond-accuracy metrics of its top-K lists: coverage, gini, entropy, avgpop, "
                   "tail, novelty, ild (default: the run's eval.beyond)")
    p.add_argument("--targets", metavar="FILE", help="a targets.json (path or URL): every point "
                   "also gets its items' T-HR and T-NDCG (default: the run's eval.targets, else "
                   "its dataset's targets.json, if any)")
    _add_worker_flags(p, "the attack and the ranking")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-K items for users of a trained run, as Parquet "
                       "(raw ids, ranks, scores)")
    p.add_argument("--run", required=True, help=RANKING_RUN_HELP)
    p.add_argument("--users", default=None, help="'all' (default: every user of the run), or "
                   "a file of raw user ids: one per line, or Parquet with a user column")
    p.add_argument("--k", type=_positive_int, default=None, help="items per user (default 10)")
    p.add_argument("--keep-seen", action="store_true", help="keep the items a user already "
                   "has in the run's data (default: left out)")
    p.add_argument("--unknown", choices=["popular", "error"], default=None,
                   help="a user id the run never saw: the most popular items (marked "
                   "fallback), or an error (default popular)")
    p.add_argument("--pairs", default=None, metavar="FILE", help="instead of top-K lists, the "
                   "score of each (user, item) pair of FILE (Parquet, or CSV with a header; "
                   "columns user and item, raw ids): any model, CTR ones too")
    p.add_argument("--batch-users", type=_positive_int, default=1024,
                   help="users ranked at once (bounds memory with the catalogue blocks); with "
                   "--pairs, pairs scored at once")
    p.add_argument("--output", required=True, help="the Parquet file to write (replaced whole "
                   "when done)")
    _add_worker_flags(p, "the users")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("export", help="a trained run for serving: its ranker (TorchScript or "
                       "torch.export), its tables as Parquet, the id mapping, a manifest")
    p.add_argument("--run", required=True, help=RANKING_RUN_HELP)
    p.add_argument("--format", choices=["torchscript", "export"], default="torchscript",
                   help="the ranker as TorchScript (ranker.pt, default) or torch.export "
                   "(ranker.pt2)")
    p.add_argument("--output", required=True, help="the export directory (replaced only if "
                   "advrec wrote it)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="plot the robustness curves, or the target metrics, of "
                       "several runs in one figure")
    p.add_argument("runs", nargs="+", help="run directories with a robustness.json (with "
                   "--target: with target metrics in metrics.json)")
    p.add_argument("--output", required=True, help="PNG file")
    p.add_argument("--metric", action="append", help="metric to plot (repeatable; default: the first run's headline, "
                   "ndcg@K, auc or click/auc)")
    p.add_argument("--target", action="store_true", help="a bar per run of its test T-HR@K and "
                   "T-NDCG@K (metrics.json's target section) instead of robustness curves")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("submit", help="run a job spec (jobs/*.yaml) as a Ray job on a cluster")
    p.add_argument("spec", help="job spec: a YAML file naming the command, its config, storage, "
                   "runtime env and resources (see jobs/)")
    p.add_argument("--address", help=JOBS_ADDRESS_HELP)
    p.add_argument("--wait", action="store_true", help="stream the job's logs until it ends; the "
                   "exit code is 0 if it succeeded, 1 if not")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="run config overrides, applied after the spec's own")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("run", help="run a job spec's command here, as a submitted job's entrypoint "
                       "does (a KubeRay RayJob's entrypoint)")
    p.add_argument("spec", help="job spec (see jobs/); its runtime_env and resources are the "
                   "submitter's business and are not used here")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="run config overrides, applied after the spec's own")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("jobs", help="list, inspect, follow or stop the jobs on a Ray cluster")
    p.add_argument("action", choices=["list", "status", "logs", "stop"],
                   help="status exits 1 for a failed or stopped job, as submit --wait does")
    p.add_argument("id", nargs="?", help="the job's submission id (status, logs, stop)")
    p.add_argument("--follow", action="store_true", help="logs: until the job ends")
    p.add_argument("--address", help=JOBS_ADDRESS_HELP)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("detect", help="score every user's suspicion of being a fake; with "
                       "--remove or --threshold, also a dataset cleaned of the suspects")
    p.add_argument("--data", required=True, help="prepared dataset: path or URL")
    p.add_argument("--output", required=True, help="detection directory: scores.parquet and "
                   "detection.json; with --remove or --threshold also the cleaned dataset")
    removal = p.add_mutually_exclusive_group()
    removal.add_argument("--remove", type=_positive_int, metavar="TOP_K",
                         help="remove the train rows of the K most suspicious users")
    removal.add_argument("--threshold", type=_threshold, metavar="T",
                         help="remove the train rows of every user whose score is >= T")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("demo", help="APR vs. a clean-trained twin on a synthetic log, end to end")
    p.add_argument("--output", default="runs/demo", help="where runs and plots go (%(default)s)")
    p.add_argument("--source", default=None, help="a raw log or prepared dataset instead of synth")
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs per model")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


_received: list[int] = []
"""The signals `_raise` got: what stopped the command, whatever exception reached `main` (Ray's
``ray.get`` turns one raised in a handler into a plain KeyboardInterrupt)."""


def _raise(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread while a command runs (SIGTERM
    would otherwise end the process without unwinding, leaving temporary outputs behind); the
    previous handlers come back after. Elsewhere than the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives a positional's arguments one run: `submit SPEC --wait k=v` leaves `k=v` over
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"{args.command}: unrecognized arguments: {' '.join(extra)}")
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        with _signals_raise():
            return func(args) or 0  # a command that follows a job returns its exit code
    except AdvrecError as exc:
        # one line whatever it echoes (a path or value with a line break in it)
        said = str(exc).replace("\r", "\\r").replace("\n", "\\n")
        print(f"advrec: error: {said}", file=sys.stderr)
        return 2
    except PermissionError as exc:  # a read-only output directory, an unreadable input
        where = f"{exc.filename}: " if exc.filename else ""
        reason = exc.strerror or (str(exc).strip().splitlines() or ["permission denied"])[0]
        print(f"advrec: error: {where}permission denied ({reason})", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full disk under an output, a name past its limit
        if exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"advrec: error: {where}cannot be written ({exc.strerror})", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Interrupted, or a library's own KeyboardInterrupt
        signum = _received[-1] if _received else getattr(exc, "signum", signal.SIGINT)
        print(f"advrec: error: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum


def run() -> NoReturn:
    """The console script: `main`, then the interpreter's exit without its C-level teardown.

    Python's own exit handlers run (Ray's shutdown, temporary files, logging), then the process
    ends with ``os._exit``: tearing the interpreter down while the native thread pools of Arrow
    and torch still exist aborted about 1 exit in 20 after an error ("terminate called without
    an active exception", exit 134 instead of 2), measured on `advrec prepare` of an empty CSV.
    """
    code = main()
    atexit._run_exitfuncs()  # what the interpreter's exit would run first
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
