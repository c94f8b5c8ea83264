"""The run config's schema: one pydantic model per section, and `RunConfig`, which checks the
sections against each other.

Every section forbids unknown keys, so a typo is an error that names the key instead of a
silently ignored setting, and no number may be infinite or NaN. Defaults are the documented ones
(README.md, "Config reference")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from advrec.config.overrides import key_text
from advrec.config.policy import (
    ADAPTIVE,
    CPU_TABLE_OPTIMIZERS,
    FEATURE_MODELS,
    MODEL_KINDS,
    ROW_SHARDING,
    SHARDING_TYPE,
    TASK_NAMES,
    default_monitor,
    metric_mode,
    model_loss,
    ranking_models,
    reported_metrics,
    table_optimizer,
    target_metrics,
)
from advrec.errors import AdvrecError, shown


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked on assignment too, no
    number is infinite or NaN (``adv.eps=.inf`` would train a NaN model), and no number is a
    boolean (``adv.eps=true`` would train at 1.0)."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes true as 1 for a number; YAML writes true for yes, on and true
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else bool
        if not _takes_bool(annotation) and any(isinstance(v, bool) for v in _values(value,
                                                                                     annotation)):
            raise ValueError("a boolean where a number or a name goes")
        return value


def _values(value: Any, annotation: Any) -> list[Any]:
    """What a field's value holds: itself, a list's entries, a mapping field's values (not a
    section's: each section checks its own)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict) and get_origin(annotation) is dict:
        return list(value.values())
    return [value]


def _takes_bool(annotation: Any) -> bool:
    """Whether a field of type ``annotation`` has a boolean anywhere in it (``bool``,
    ``bool | None``, ``list[Any]``)."""
    return annotation in (bool, Any) or any(_takes_bool(a) for a in get_args(annotation))


def config_key(key: str) -> str:
    """A data option as a run config names it: ``data.kcore``."""
    return f"data.{key}"


# The rules of the data options, owned here and applied both by DataConfig and by `prepare`
# (which `advrec prepare` calls without a config). ``name`` turns a DataConfig key into how the
# caller's user knows the option (prepare: ``--kcore/data.kcore``); each raises an AdvrecError,
# a ValueError, which pydantic reports under the section's name.


def check_non_negative(key: str, value: int, name: Callable[[str], str] = config_key) -> None:
    """A count or seed (data.kcore, data.seed) is >= 0."""
    if value < 0:
        raise AdvrecError(f"{name(key)} must be >= 0, not {value}")


def check_label_column(
    label_column: str | None,
    label_threshold: float | None,
    min_rating: float | None,
    name: Callable[[str], str] = config_key,
) -> None:
    """A log's own 0/1 column (data.label_column) excludes the other label source
    (data.label_threshold) and data.min_rating, which would drop the negatives."""
    if label_column is None:
        return
    if label_threshold is not None:
        raise AdvrecError(f"{name('label_column')} and {name('label_threshold')} exclude each "
                          "other: the labels come from one or the other")
    if min_rating is not None:
        raise AdvrecError(f"{name('label_column')} and {name('min_rating')} exclude each other: "
                          "a CTR dataset keeps its negatives")


def check_listed_once(names: Sequence[str], what: str) -> None:
    """Each column of a list (data.user_features, data.item_features) is named once; ``what``
    begins the message: ``column 'genre' is listed twice``. Linear in the list (a set, not a
    scan of the names before each: a targets.json of 10^6 items took hours)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise AdvrecError(f"{what} {shown(name)} is listed twice")
        seen.add(name)


class DataConfig(Section):
    source: str = Field(description="A raw log or a prepared dataset: a path or any fsspec URL.")
    format: Literal["auto", "prepared", "movielens", "recbole", "sasrec", "csv", "parquet"] = "auto"
    split: str = "random:0.8,0.1,0.1"
    min_rating: float | None = None
    kcore: int = 0
    seed: int = 0
    cache_dir: str | None = Field(
        None, description="Where `train` keeps datasets it prepares itself (default ~/.cache/advrec)."
    )
    label_threshold: float | None = Field(
        None, description="CTR data: keep every rating, labelled 1 where rating >= this, else 0.")
    label_column: str | None = Field(
        None, description="CTR data: the log's own 0/1 click column (csv, parquet, recbole).")
    user_features: list[str] = Field(
        default_factory=list,
        description="Columns of the log carried as user features (each user's first row).")
    item_features: list[str] = Field(
        default_factory=list,
        description="Columns of the log carried as item features (each item's first row).")
    numeric_features: list[str] = Field(
        default_factory=list,
        description="Side-feature columns to bucketise as numbers although stored as tokens.")
    exclude_features: list[str] = Field(
        default_factory=list, description="Side-feature columns the models ignore (free text).")
    feature_buckets: int = Field(10, gt=0, description="Equal-frequency bins of a numeric feature.")
    user_buckets: int = Field(
        0, ge=0, description="Hash the raw user ids into a table of this many rows (0: a row "
        "per user), for id spaces too large to give each id its own row; meta.json reports "
        "the collision rate.")
    item_buckets: int = Field(0, ge=0, description="As data.user_buckets, for the items.")
    stream: bool = Field(
        False, description="Stream the training rows from the prepared train split with Ray Data "
        "(read in blocks, split across workers) instead of loading them into every worker.")
    shuffle_buffer: int = Field(
        1_000_000, gt=0, description="With data.stream: rows a worker keeps to shuffle its "
        "stream from (the prepared train split is ordered by user).")

    @field_validator("label_column")
    @classmethod
    def _named(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must name a column (or be null)")
        return v

    @field_validator("user_features", "item_features")
    @classmethod
    def _column_names(cls, v: list[str]) -> list[str]:
        if any(not name.strip() for name in v):
            raise ValueError("column names must be non-empty")
        check_listed_once(v, "column")
        return v

    @model_validator(mode="after")
    def _data_rules(self) -> DataConfig:  # reported as "data: ..." by pydantic
        check_non_negative("kcore", self.kcore)
        check_label_column(self.label_column, self.label_threshold, self.min_rating)
        return self

    @field_validator("split")
    @classmethod
    def _known_split(cls, v: str) -> str:
        # checked here too, not only when a log is prepared: a prepared dataset ignores it, and
        # a typo there would pass unnoticed (imported here: advrec.data imports this module)
        from advrec.data.splits import parse_split

        spec = parse_split(v, name=None)  # the loader names the key and the value
        if spec.ratios is not None and spec.ratios[1] == 0:
            raise ValueError("no validation share, and training validates every evaluation "
                             "(give three shares, e.g. random:0.8,0.1,0.1)")
        return v


class ModelConfig(Section):
    name: Literal["mf", "neumf", "sasrec", "twotower", "deepfm", "dcnv2", "mmoe"] = "mf"
    dim: int = Field(64, gt=0)
    mlp_layers: list[int] = Field(default_factory=lambda: [128, 64, 32])
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    max_len: int = Field(50, gt=0, description="SASRec: the longest history it attends over.")
    layers: int = Field(2, gt=0, description="SASRec: transformer blocks.")
    heads: int = Field(1, gt=0, description="SASRec: attention heads (must divide dim).")
    cross_layers: int = Field(3, gt=0, description="DCN-v2: cross layers.")
    temperature: float = Field(
        0.05, gt=0.0, description="Two-tower: logits are cosine similarities / temperature.")
    logq: bool = Field(True, description="Two-tower: correct in-batch logits by -log(item frequency).")
    experts: int = Field(4, gt=0, description="MMoE: shared experts.")
    task_weights: dict[str, float] = Field(
        default_factory=lambda: dict.fromkeys(TASK_NAMES, 1.0),
        description="MMoE: the weight of each task's loss.")
    init: Literal["xavier", "normal"] = "xavier"
    init_std: float = Field(0.1, gt=0.0, description="Std of the `normal` init.")
    embeddings: Literal["dense", "torchrec"] = Field(
        "dense", description="dense: nn.Embedding tables, replicated on every worker (DDP). "
        "torchrec: tables sharded across the workers by torchrec's DistributedModelParallel "
        "(the planner picks each table's sharding; `model.sharding` overrides it), updated by "
        "a fused optimizer in the backward (`train.table_optimizer`); the dense layers stay "
        "data-parallel. Needs `make torchrec`.")
    sharding: dict[str, SHARDING_TYPE] = Field(
        default_factory=dict, description="With embeddings=torchrec: a sharding type per table "
        "name (the model's tables: user, item, user_gmf, ...), e.g. {user: column_wise}. "
        "row_wise and table_row_wise need GPUs.")

    @field_validator("mlp_layers")
    @classmethod
    def _positive_layers(cls, v: list[int]) -> list[int]:
        if not v or any(w <= 0 for w in v):
            raise ValueError("must be a non-empty list of positive widths")
        return v

    @field_validator("task_weights")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        for name, weight in v.items():
            if name not in TASK_NAMES:
                raise ValueError(f"unknown task {shown(name)} (tasks: {', '.join(TASK_NAMES)})")
            if not weight >= 0:  # also rejects NaN
                raise ValueError(f"task '{name}': weight must be >= 0 (got {weight})")
        if not any(weight > 0 for weight in v.values()):
            raise ValueError("at least one task needs a weight > 0")
        return {name: v.get(name, 0.0) for name in TASK_NAMES}

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ModelConfig:  # reported as "model: ..." by pydantic
        if self.dim % self.heads:
            raise ValueError(f"{self.heads} heads do not divide model.dim={self.dim}")
        return self


class Adversary(Section):
    """One adversary of the objective: its attack and its weight λ (``L(x) + λ·L(x')``)."""

    method: Literal["none", "random", "fgsm", "fgm", "pgd", "jsma", "jsma-items",
                    "jsma-fields"] = "none"
    eps: float = Field(0.5, ge=0.0)
    lam: float = Field(1.0, ge=0.0, alias="lambda")
    steps: int = Field(1, gt=0, description="PGD steps K; JSMA rounds.")
    l0: int | None = Field(
        None, gt=0, description="JSMA: coordinates changed per embedding row (at most "
        "model.dim); default a tenth of the row's width, at least 1.")
    budget: int = Field(
        1, gt=0, description="jsma-items: history items swapped per sequence; jsma-fields: "
        "feature fields changed per example (greedily, one per round on a fresh gradient).")
    similarity: float | None = Field(
        None, ge=-1.0, le=1.0, description="jsma-items: a substitute's embedding must have "
        "cosine >= this with the item it replaces (Yue et al. RecSys 2022); default any item.")
    positions: Literal["all", "one"] = Field(
        "all", description="jsma-items in training: the positions whose next-item loss the "
        "swaps raise and L(x') counts. all: every position of the history (the training "
        "loss); one: one random real position per history, with the swaps among the items "
        "before it, as an attacker of one recommendation swaps items before the held-out one.")
    step_size: float | None = Field(
        None, gt=0.0, description="PGD step size; default 2.5 * eps / steps (Madry et al.)."
    )
    norm: Literal["l2", "linf"] = "l2"
    random_start: bool = False
    target: Literal["user", "item", "all"] = "all"
    relative: bool = Field(
        False, description="Scale eps by each row's own embedding norm (eps is then a fraction)."
    )

    @model_validator(mode="after")
    def _similarity_bounds_item_swaps(self) -> Adversary:
        # only jsma-items picks substitutes; elsewhere the key would be silently ignored (as
        # `advrec evaluate --similarity` is refused without jsma-items)
        if self.similarity is not None and self.method != "jsma-items":
            raise ValueError(f"similarity={self.similarity}: only method=jsma-items (which swaps "
                             f"history items) takes it, not method={self.method}")
        if self.positions != "all" and self.method != "jsma-items":
            raise ValueError(f"positions={self.positions}: only method=jsma-items (which swaps "
                             f"history items) takes it, not method={self.method}")
        return self


class AdvConfig(Adversary):
    start_epoch: int = Field(
        0, ge=0, description="Clean warm-up: adversarial training starts at this epoch (APR)."
    )
    adaptive: ADAPTIVE = Field(
        "none", description="Per-user eps, the defences made for poisoning: each example's rows "
        "get eps * lambda_a * sigmoid(r_u - 1) with r_u = mean loss / the user's loss (vat, "
        "Zhang et al. RecSys 2024) or |e_u|^2 / mean |e|^2 (pamacf, Zhang et al. NeurIPS "
        "2024), over the worker's batch; eps is the papers' rho.")
    adaptive_lambda: float = Field(
        2.0, gt=0.0, description="lambda_a of adv.adaptive: a user's eps lies in (0, lambda_a * "
        "eps), and is eps at the batch's mean; 2 in both papers' code.")

    schedule: Literal["standard", "free", "fast", "accumulate"] = Field(
        "standard", description="How the attack is paid for. standard: the attack from scratch "
        "on every batch. free (Shafahi et al. 2019): each adversarial batch is trained "
        "adv.replays times, the first replay on the attack's delta, each later one on delta "
        "moved one ascent step (adv.step_size, default eps) by the gradient the previous "
        "replay's backward left on it, and the adversarial epochs are divided by the replays: "
        "a replay costs one FGM step, so the run costs FGM training's, with delta moved "
        "PGD-like. fast (Wong et al. 2020): FGSM/FGM "
        "from a random start in the ball with a step of 1.25 eps, guarded by adv.guard. "
        "accumulate (ATTA, Zheng et al. 2020): one delta per attacked embedding row, kept "
        "across batches and epochs; every lookup of a row trains on its delta, then moves it "
        "one ascent step (adv.step_size, default 0.1 eps for FGSM/FGM) along the gradient "
        "the training backward left on it, with no attack gradient of its own.")
    replays: int = Field(1, gt=0, description="schedule=free: trainings of each batch.")
    decay: float = Field(
        1.0, ge=0.0, le=1.0, description="schedule=accumulate: every adversarial epoch starts "
        "with each remembered delta times this; 1 keeps them, 0 starts each epoch from zero.")
    memory: Literal["worker", "sharded"] = Field(
        "worker", description="schedule=accumulate: where the delta memory lives. worker: one "
        "delta table the size of each attacked table on every worker, each worker moving the "
        "rows it looks up, no communication. sharded (model.embeddings=torchrec): one delta per "
        "row for all the workers, each table's cut row-wise into one block per worker (1/N of "
        "it each); every lookup fetches the batch's rows from their owners and every step sends "
        "them back (all-to-alls), and a row several workers moved in one step keeps the mean.")
    guard: float = Field(
        0.5, ge=0.0, le=1.0, description="schedule=fast: catastrophic overfitting guard; the "
        "run stops, keeping the best epoch before, when robust/ of train.monitor (eval."
        "robust_every, on eval.robust_rows training examples) falls below guard times its best "
        "adversarial value; 0 off.")

    mix: list[Adversary] = Field(
        default_factory=list, description="More adversaries, each with its own lambda: the "
        "objective becomes L(x) + lambda * L(x') + sum_i lambda_i * L(x'_i), e.g. embedding FGM "
        "and jsma-items together. Each entry takes this section's attack keys (method, eps, "
        "lambda, steps, l0, budget, similarity, positions, step_size, norm, random_start, target, "
        "relative), with the same defaults; start_epoch applies to all of them, adaptive to "
        "those that attack embeddings (adaptive needs one: adv's or the mix's).")

    def adversaries(self) -> list[tuple[str, Adversary]]:
        """Every adversary that attacks (method not none) by its config key: ``adv`` itself,
        then ``adv.mix[i]``."""
        named = [("adv", self), *((f"adv.mix[{i}]", a) for i, a in enumerate(self.mix))]
        return [(key, a) for key, a in named if a.method != "none"]

    @model_validator(mode="after")
    def _schedule_fits_the_attack(self) -> AdvConfig:
        # against the default: a dumped config has every key set
        if self.replays != 1 and self.schedule != "free":
            raise ValueError(f"replays={self.replays} applies to schedule=free only")
        if self.decay != 1.0 and self.schedule != "accumulate":
            raise ValueError(f"decay={self.decay} applies to schedule=accumulate only")
        if self.memory != "worker" and self.schedule != "accumulate":
            raise ValueError(f"memory={self.memory} applies to schedule=accumulate only")
        if self.schedule == "standard":
            return self
        ascends = ("fgsm", "fgm") if self.schedule == "fast" else ("fgsm", "fgm", "pgd")
        if self.method not in ascends:
            what = ("is FGSM/FGM from a random start (Wong et al. 2020)"
                    if self.schedule == "fast" else "moves delta by ascent steps")
            raise ValueError(f"schedule={self.schedule} {what}; method={self.method} has no "
                             f"such step: set method to {' or '.join(ascends)}")
        if self.schedule == "accumulate" and self.random_start:
            raise ValueError("random_start=true: schedule=accumulate starts every row's delta "
                             "at zero and steps it from where it was left")
        if self.mix:
            raise ValueError(f"schedule={self.schedule} trains one adversary; adv.mix has "
                             f"{len(self.mix)} more (use schedule=standard to mix)")
        return self

    def epochs_run(self, epochs: int) -> int:
        """The epochs a run of ``epochs`` (train.epochs) trains: schedule=free divides the
        adversarial ones (from start_epoch) by the replays, rounded up."""
        if self.schedule != "free" or epochs <= self.start_epoch:
            return epochs
        return self.start_epoch + -(-(epochs - self.start_epoch) // self.replays)

    @model_validator(mode="after")
    def _adaptive_scales_an_attack(self) -> AdvConfig:
        # adaptive sizes the eps of every embedding attack, adv's and adv.mix's, that trains
        # (lambda and eps above 0); the discrete attacks (a budget of swapped items or fields)
        # have no eps it could scale
        why = [f"{key}.method={a.method} changes a budget of inputs" if a.method in BUDGET_ATTACKS
               else f"{key}.lambda=0" if a.lam == 0 else f"{key}.eps=0" if a.eps == 0 else ""
               for key, a in self.adversaries()]
        if self.adaptive == "none" or "" in why:
            return self
        raise ValueError(f"adaptive={self.adaptive} scales an embedding attack's eps per user, "
                         f"but {', '.join(why) or 'method=none makes no attack'}; set "
                         "adv.method (fgm: APR's attack, which both papers use)")


ADAM_KINDS = ("adam", "adamw")
"""The optimizers that take `TrainConfig.betas`."""


class TrainConfig(Section):
    epochs: int = Field(100, gt=0)
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(2048, gt=0)
    loss: Literal["bpr", "bce", "softmax"] | None = Field(
        None, description="Ranking loss over the positive and its sampled negatives; default "
        "bpr. Two-tower trains with in-batch softmax, CTR models with bce against the labels, "
        "and MMoE with its per-task losses, so for those only their own value (or none) is valid.")
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="Adam's and AdamW's (beta1, beta2), the decay rates of the "
        "gradient's moments; SASRec's references train with [0.9, 0.98].")
    weight_decay: float = Field(0.0, ge=0.0)
    reg: float = Field(0.0, ge=0.0, description="L2 penalty on the batch's embedding rows.")
    num_negatives: int | Literal["all"] = Field(
        1, description="Sampled negatives per positive; 'all' scores every item at every position "
        "(SASRec's full softmax).")
    # numpy's generators (a stream's replay draw) take no negative, torch's nothing >= 2**64
    seed: int = Field(0, ge=0, lt=2**64)
    eval_every: int = Field(1, gt=0, description="Validate every N epochs (and after the last).")
    patience: int = Field(10, ge=0, description="Evaluations (every eval_every epochs) without "
                          "improvement before stopping; 0 = off.")
    monitor: str | None = Field(
        None, description="The valid metric for early stopping and the best epoch; default "
        "ndcg@K (first of eval.ks) for ranking, auc for CTR, click/auc for multi-task.")
    sparse_embeddings: bool = Field(
        False, description="Sparse gradients for the embedding tables, with a sparse optimizer "
        "(SparseAdam for adam/adamw): a step updates the batch's rows only. For large "
        "catalogues; gloo and CPU only (NCCL cannot all-reduce sparse gradients).")
    table_optimizer: Literal["sgd", "adagrad", "rowwise_adagrad", "adam"] | None = Field(
        None, description="With model.embeddings=torchrec: the tables' fused optimizer "
        "(applied in the backward, to the rows looked up); default train.optimizer (adam for "
        "adamw, without weight decay). On CPU FBGEMM has sgd, adagrad and rowwise_adagrad.")
    checkpoint_every: int = Field(
        1, ge=0, description="Save the whole training state every N epochs (0 = never), so a "
        "stopped run continues with `advrec train --resume` and failed workers restart from it.")
    init_from: str | None = Field(
        None, min_length=1, description="Warm start (`advrec train --init-from RUN`): begin from this "
        "finished run's best weights instead of a fresh initialisation. Rows are matched by raw "
        "user and item id and by feature value; new ones start fresh. The run must be of the "
        "same model and shape (every model key but embeddings, sharding, dropout, init, "
        "init_std, temperature and logq).")
    init_optimizer: bool = Field(
        False, description="With init_from: also carry over the run's optimizer state of its "
        "best epoch (Adam's moments, Adagrad's sums; rows of new ids start at zero). Dense "
        "tables, the same train.optimizer.")
    loggers: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="Where each epoch's losses, metrics and times also "
        "go: tensorboard (event files under the run's tensorboard/), mlflow (a run on "
        "MLFLOW_TRACKING_URI; pip install advrec[mlflow]).")
    fault_epoch: int | None = Field(
        None, ge=0, description="Fault injection, for tests: a worker dies half-way through "
        "this epoch (raises in-process), once; a resumed run never fails again.")

    @model_validator(mode="after")
    def _betas_need_adam(self) -> TrainConfig:
        adam = self.optimizer in ADAM_KINDS or self.table_optimizer == "adam"
        # compared with the default, not "was it set": a dumped config is validated again on
        # every Ray Train worker, with every key set
        if self.betas != TrainConfig.model_fields["betas"].default and not adam:
            raise ValueError(f"betas: only adam and adamw use them (optimizer={self.optimizer})")
        return self

    @model_validator(mode="after")
    def _sparse_gradients(self) -> TrainConfig:
        if self.sparse_embeddings and self.weight_decay:
            raise ValueError("weight_decay does not apply to sparse gradients; with "
                             "sparse_embeddings use train.reg (L2 on the batch's rows)")
        if self.sparse_embeddings and self.num_negatives == "all":
            raise ValueError("num_negatives=all scores every item, so its gradient is dense: "
                             "it cannot train with sparse_embeddings")
        return self

    @field_validator("loggers")
    @classmethod
    def _each_logger_once(cls, v: list[str]) -> list[str]:
        twice = next((name for n, name in enumerate(v) if name in v[:n]), None)
        if twice is not None:
            raise ValueError(f"{twice} is listed twice")
        return v

    @model_validator(mode="after")
    def _init_optimizer_needs_a_run(self) -> TrainConfig:
        if self.init_optimizer and not self.init_from:
            raise ValueError("init_optimizer carries over the optimizer state of "
                             "train.init_from's run; name that run")
        return self

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):  # nan fails too
            raise ValueError("each beta must be in [0, 1)")
        return v

    @field_validator("num_negatives", mode="before")
    @classmethod
    def _negatives(cls, v: Any) -> Any:
        # before pydantic's union, which would report int and literal errors separately
        if v != "all" and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ValueError("must be a positive integer, or 'all' (every item, SASRec only)")
        return v


Attack = Literal["fgm", "pgd", "jsma"]
"""The robustness attacks (`advrec.metrics.robustness`)."""
ATTACKS: tuple[str, ...] = get_args(Attack)
BUDGET_ATTACKS = ("jsma-items", "jsma-fields")
"""The robustness attacks on real inputs, measured against a budget of changed inputs rather
than ε (`advrec.metrics.history_attack`, `advrec.metrics.field_attack`)."""


def no_histories(what: str, model: str) -> str:
    """The error of an attack on item histories aimed at a model without them (all but
    SASRec); MF's and NeuMF's inputs are ids alone, so their discrete attack is poisoning."""
    hint = (" (its inputs are ids alone: its discrete attack is poisoning, `advrec poison`)"
            if model in ("mf", "neumf") else "")
    return f"{what} attacks item histories; model.name={model} has none{hint}"


def no_fields(what: str, model: str) -> str:
    """The error of an attack on feature fields aimed at a model without them."""
    hint = (" (its discrete attack is jsma-items, on its histories)" if model == "sasrec"
            else " (its inputs are ids alone: its discrete attack is poisoning, `advrec poison`)")
    return (f"{what} changes feature fields; model.name={model} has none{hint}; the feature "
            f"models are {', '.join(FEATURE_MODELS)}")


class EvalConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    protocol: Literal["full", "sampled"] = "full"
    num_negatives: int = Field(100, gt=0, description="Negatives per test item (sampled protocol).")
    batch_users: int = Field(1024, gt=0, description="Users scored per chunk (bounds memory).")
    attacks: list[Attack] = Field(default_factory=lambda: ["fgm", "pgd"])
    eps: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.25, 0.5, 1.0])
    steps: int = Field(10, gt=0, description="PGD steps (JSMA rounds) of the robustness attack.")
    l0: int | None = Field(
        None, gt=0, description="The JSMA robustness attack's coordinates per row (as adv.l0).")
    relative: bool = Field(
        False, description="The robustness attack's ε is relative to each row's norm (as adv.relative).")
    seed: int = Field(0, ge=0, lt=2**64)
    robust_every: int = Field(
        0, ge=0, description="Every N evaluated epochs also report valid metrics under attack "
        "(robust/...), and at the end for the best epoch; 0 never.")
    robust_attack: Attack = Field("pgd", description="The attack of robust/...")
    robust_eps: float = Field(0.5, gt=0.0, description="The ε of robust/...")
    robust_rows: int = Field(
        0, ge=0, description="Training examples the robust/... attack differentiates (its cost); "
        "0 all of them.")
    targets: str | None = Field(
        None, description="A targets.json (path or URL, as `advrec poison` writes) naming the "
        "items whose T-HR and T-NDCG (target/...) every evaluation reports; default: the "
        "dataset's own targets.json, if it has one (a poisoned dataset).")
    target_k: int = Field(50, gt=0, description="The cut-off of T-HR@K and T-NDCG@K.")
    beyond: bool = Field(
        False, description="Also report beyond-accuracy metrics of the top-K lists at every K: "
        "coverage, gini, entropy, avgpop, tail, novelty, ild (full ranking only).")
    tail_ratio: float = Field(
        0.1, gt=0.0, le=1.0, description="The long tail of tail@K: this share of the catalogue, "
        "least popular first.")

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, v: list[int]) -> list[int]:
        if not v or any(k <= 0 for k in v):
            raise ValueError("must be a non-empty list of positive cut-offs")
        return sorted(set(v))

    @field_validator("targets")
    @classmethod
    def _names_a_file(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must name a targets.json (or be null)")
        return v

    @field_validator("eps")
    @classmethod
    def _non_negative_eps(cls, v: list[float]) -> list[float]:
        if not v or any(e < 0 for e in v):
            raise ValueError("must be a non-empty list of eps >= 0")
        return sorted(set(v))

    @model_validator(mode="after")
    def _beyond_ranks_every_item(self) -> EvalConfig:
        if self.beyond and self.protocol != "full":
            raise ValueError("beyond=true: the beyond-accuracy metrics are of top-K lists of "
                             f"the whole catalogue; set protocol=full (not {self.protocol})")
        return self


class ScalingConfig(Section):
    num_workers: int = Field(
        0, ge=0, description="0 trains in this process; N >= 1 trains on N Ray Train workers "
        "with DDP (gloo; NCCL with use_gpu), each on its own shard of every epoch's batches.")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="Logical CPUs Ray reserves per worker.")
    use_gpu: bool = Field(
        False, description="Train (and evaluate) on a GPU: one per worker, DDP over NCCL; "
        "in this process, the first CUDA device.")
    max_failures: int = Field(
        0, ge=0, description="Worker-group failures Ray Train recovers from by restarting the "
        "workers from the latest checkpoint (train.checkpoint_every).")


class SearchDim(Section):
    """One key's search distribution: exactly one of these."""

    loguniform: list[float] | None = None
    uniform: list[float] | None = None
    choice: list[Any] | None = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDim:
        given = [k for k in SEARCH_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SEARCH_KINDS)}")
        values = getattr(self, given[0])
        if given[0] in ("loguniform", "uniform"):
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"{given[0]} takes [low, high] with low < high")
            if given[0] == "loguniform" and values[0] <= 0:
                raise ValueError("loguniform bounds must be > 0")
        elif not values:
            raise ValueError(f"{given[0]} needs at least one value")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SEARCH_KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any]:
        return getattr(self, self.kind)


SEARCH_KINDS = ("loguniform", "uniform", "choice", "grid")


def _default_space() -> dict[str, SearchDim]:
    return {"adv.eps": SearchDim(loguniform=[0.05, 2.0]),
            "adv.lambda": SearchDim(loguniform=[0.1, 2.0]),
            "train.lr": SearchDim(loguniform=[1e-4, 1e-2])}


class TuneConfig(Section):
    space: dict[str, SearchDim] = Field(
        default_factory=_default_space, description="Config key -> its search distribution.")
    num_samples: int = Field(8, gt=0, description="Trials (each grid point this many times).")
    max_concurrent: int = Field(1, gt=0, description="Trials running at once.")
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = Field(5, gt=0, description="ASHA: epochs before a trial may be stopped.")
    reduction_factor: float = Field(2.0, gt=1.0, description="ASHA: 1/fraction kept per rung.")
    search: Literal["random", "optuna"] = Field(
        "random", description="random (grid dims expanded) or optuna (extra advrec[optuna]).")
    seed: int | None = Field(  # both samplers seed numpy's RandomState: below 2**32
        0, ge=0, lt=2**32, description="Seed of the search's sampler (the same trials again); null: random.")
    metric: str | None = Field(
        None, description="What trials optimise: valid/M, robust/M (eval.robust_every) or "
        "objective (tune.weights); default valid/ of train.monitor.")
    mode: Literal["max", "min"] | None = Field(None, description="Default: the metric's own.")
    weights: dict[str, float] = Field(
        default_factory=dict, description="objective = sum of weight * metric over these.")
    objectives: list[str] = Field(
        default_factory=list, description="With search=optuna: reported metrics Optuna's "
        "multi-objective sampler pushes the front of (tune.metric still drives ASHA and "
        "best.yaml).")

    @field_validator("space")
    @classmethod
    def _not_empty(cls, v: dict[str, SearchDim]) -> dict[str, SearchDim]:
        if not v:
            raise ValueError("is empty: name at least one config key to search")
        return v


class RunConfig(Section):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    adv: AdvConfig = Field(default_factory=AdvConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)

    @property
    def kind(self) -> str:
        """``ranking``, ``ctr`` or ``multitask`` (`MODEL_KINDS`)."""
        return MODEL_KINDS[self.model.name]

    def reported_metrics(self) -> list[str]:
        """The metric keys evaluation reports for this config's model."""
        return reported_metrics(self.kind, self.eval.ks, self.eval.beyond)

    def monitor(self) -> tuple[str, bool]:
        """The monitored valid metric and whether higher is better."""
        name = self.train.monitor or default_monitor(self.kind, self.eval.ks)
        return name, metric_mode(name) == "max"

    def loss(self) -> str | None:
        """The training loss of a single-task model (None for the multi-task one)."""
        return model_loss(self.model.name, self.train.loss)

    @model_validator(mode="after")
    def _loss_fits_the_model(self) -> RunConfig:
        if self.train.loss is not None and self.train.loss != self.loss():
            trains = f"trains with {self.loss()}" if self.loss() else "has its own per-task losses"
            raise ValueError(f"train.loss: model.name={self.model.name} {trains}, "
                             f"not {self.train.loss}; leave train.loss unset")
        return self

    @model_validator(mode="after")
    def _all_negatives_is_sequential(self) -> RunConfig:
        if self.train.num_negatives == "all" and self.model.name != "sasrec":
            raise ValueError(f"train.num_negatives: 'all' (every item at every position) is for "
                             f"model.name=sasrec, not {self.model.name}")
        return self

    @model_validator(mode="after")
    def _nccl_has_no_sparse_all_reduce(self) -> RunConfig:
        if self.scaling.use_gpu and self.train.sparse_embeddings:
            raise ValueError("train.sparse_embeddings: sparse gradients are all-reduced by gloo "
                             "(CPU) only, not by NCCL; with scaling.use_gpu keep them dense")
        return self

    def table_optimizer(self) -> str:
        """The fused optimizer of torchrec tables (`TABLE_OPTIMIZERS`)."""
        return table_optimizer(self.train.optimizer, self.train.table_optimizer)

    @model_validator(mode="after")
    def _torchrec_tables(self) -> RunConfig:
        if self.model.embeddings != "torchrec":
            if self.model.sharding or self.train.table_optimizer:
                key = "model.sharding" if self.model.sharding else "train.table_optimizer"
                raise ValueError(f"{key} applies to model.embeddings=torchrec only")
            if self.adv.memory == "sharded":
                raise ValueError("adv.memory=sharded shards delta as torchrec shards the tables: "
                                 "it applies to model.embeddings=torchrec only (dense tables: "
                                 "adv.memory=worker)")
            return self
        if self.train.sparse_embeddings:
            raise ValueError("train.sparse_embeddings: torchrec tables update their looked-up "
                             "rows with a fused optimizer already; leave it false")
        if self.eval.robust_every:
            raise ValueError("eval.robust_every: the robust/... attack moves whole tables, "
                             "which torchrec shards; measure robustness with `advrec evaluate` "
                             "on the run's checkpoint")
        if not self.scaling.use_gpu:
            for table, kind in self.model.sharding.items():
                if kind in ROW_SHARDING:
                    raise ValueError(f"model.sharding: {key_text(table)}: {kind} is CUDA-only in "
                                     "torchrec; on CPU use table_wise, column_wise, "
                                     "table_column_wise or data_parallel")
            if self.table_optimizer() not in CPU_TABLE_OPTIMIZERS:
                raise ValueError(f"train.table_optimizer: {self.table_optimizer()} tables are "
                                 "GPU-only in FBGEMM; on CPU set train.table_optimizer to one "
                                 f"of {', '.join(CPU_TABLE_OPTIMIZERS)}")
        return self

    @model_validator(mode="after")
    def _robust_labels_in_memory(self) -> RunConfig:
        if self.eval.robust_every and self.data.stream and self.kind != "ranking":
            raise ValueError("eval.robust_every: the attack needs the train split's labels, "
                             "which data.stream leaves out of memory; set data.stream=false")
        return self

    @model_validator(mode="after")
    def _l0_fits_the_rows(self) -> RunConfig:
        # every attacked row is model.dim wide (DeepFM's first-order weights narrower: JSMA
        # may change all of theirs), so a larger l0 would be no L0 budget at all
        for key, l0 in (*((f"{name}.l0", a.l0) for name, a in self.adv.adversaries()),
                        ("eval.l0", self.eval.l0)):
            if l0 is not None and l0 > self.model.dim:
                raise ValueError(f"{key}={l0} is above model.dim={self.model.dim}: JSMA "
                                 "changes at most l0 coordinates of each embedding row")
        return self

    @model_validator(mode="after")
    def _fast_is_guarded(self) -> RunConfig:
        if self.adv.schedule == "fast" and self.adv.guard > 0 and not self.eval.robust_every:
            raise ValueError(f"adv.schedule=fast: its guard (adv.guard={self.adv.guard}) reads "
                             "robust/ metrics; set eval.robust_every=1 (eval.robust_rows bounds "
                             "its cost) or adv.guard=0 to train unguarded")
        return self

    @model_validator(mode="after")
    def _adaptive_needs_users(self) -> RunConfig:
        if self.adv.adaptive != "none" and self.model.name == "sasrec":
            raise ValueError(f"adv.adaptive={self.adv.adaptive} sizes eps per user, and "
                             "model.name=sasrec has no user rows (it scores sequences); use a "
                             "user-id model (mf, neumf, twotower, deepfm, dcnv2, mmoe)")
        return self

    @model_validator(mode="after")
    def _mixed_adversaries_attack(self) -> RunConfig:
        # here, not on the field, so that the error names the entry as the others do
        for i, adversary in enumerate(self.adv.mix):
            if adversary.method == "none":
                raise ValueError(f"adv.mix[{i}].method=none makes no attack; name one (fgm, "
                                 "pgd, jsma, jsma-items, jsma-fields, ...) or drop the entry")
        return self

    @model_validator(mode="after")
    def _item_swaps_need_histories(self) -> RunConfig:
        for name, adversary in self.adv.adversaries():
            if adversary.method == "jsma-items" and self.model.name != "sasrec":
                raise ValueError(no_histories(f"{name}.method=jsma-items", self.model.name))
            # a sequence holds at most max_len items, each swapped at most once: a larger budget
            # would read as a stronger attack than any it makes (as jsma-fields' above the fields)
            if adversary.method == "jsma-items" and adversary.budget > self.model.max_len:
                raise ValueError(f"{name}.budget={adversary.budget}: above model.max_len="
                                 f"{self.model.max_len}, the most history items a sequence "
                                 "holds; jsma-items swaps each at most once")
        return self

    @model_validator(mode="after")
    def _field_flips_need_fields(self) -> RunConfig:
        for name, adversary in self.adv.adversaries():
            if adversary.method == "jsma-fields" and self.model.name not in FEATURE_MODELS:
                raise ValueError(no_fields(f"{name}.method=jsma-fields", self.model.name))
        return self

    @model_validator(mode="after")
    def _sequences_load_whole(self) -> RunConfig:
        if self.data.stream and self.model.name == "sasrec":
            raise ValueError("data.stream: SASRec trains on whole per-user sequences, which "
                             "are built in memory, not streamed; set data.stream=false")
        return self

    def tune_metric(self) -> tuple[str, str]:
        """What `advrec tune` optimises, and whether up (``max``) or down."""
        name = self.tune.metric or f"valid/{self.monitor()[0]}"
        return name, self.tune.mode or metric_mode(name)

    def trial_metrics(self) -> list[str]:
        """What each epoch reports that a search can optimise: valid metrics, robust ones with
        eval.robust_every, and the target-item ones (target/...), which need target items:
        `advrec.metrics.target.check_targets_reported` checks, once the dataset is known."""
        reported = [f"valid/{m}" for m in self.reported_metrics()]
        if self.eval.robust_every:
            reported += [f"robust/{m}" for m in self.reported_metrics()]
        return reported + target_metrics(self.eval.target_k)

    @model_validator(mode="after")
    def _tune_metric_is_reported(self) -> RunConfig:
        reported = self.trial_metrics()
        for key in self.tune.weights:
            if key not in reported:
                raise ValueError(f"tune.weights: {shown(key)} is never reported (reported: "
                                 f"{', '.join(reported)})")
        if len(self.tune.objectives) == 1:
            raise ValueError("tune.objectives: name two metrics or more (one alone is "
                             "tune.metric)")
        if self.tune.objectives and self.tune.search != "optuna":
            raise ValueError("tune.objectives: a multi-objective search needs "
                             "tune.search=optuna")
        for key in self.tune.objectives:
            if key not in reported:
                raise ValueError(f"tune.objectives: {shown(key)} is never reported (reported: "
                                 f"{', '.join(reported)})")
        metric = self.tune.metric
        if metric == "objective" and not self.tune.weights:
            raise ValueError("tune.metric: 'objective' needs tune.weights")
        if metric is not None and metric != "objective" and metric not in reported:
            hint = "; robust/ metrics need eval.robust_every > 0" if metric.startswith(
                "robust/") and not self.eval.robust_every else ""
            raise ValueError(f"tune.metric: {shown(metric)} is never reported (reported: "
                             f"{', '.join(reported)}, objective){hint}")
        return self

    @model_validator(mode="after")
    def _monitor_is_reported(self) -> RunConfig:
        reported = self.reported_metrics()
        if self.train.monitor is not None and self.train.monitor not in reported:
            raise ValueError(
                f"train.monitor: {shown(self.train.monitor)} is not one of the metrics reported "
                f"for model.name={self.model.name} ({', '.join(reported)})"
            )
        return self

    @model_validator(mode="after")
    def _beyond_is_of_rankings(self) -> RunConfig:
        if self.eval.beyond and self.kind != "ranking":
            raise ValueError(f"eval.beyond: model.name={self.model.name} is evaluated by "
                             f"{', '.join(self.reported_metrics())}, not by top-K lists; the "
                             f"ranking models are {', '.join(ranking_models())}")
        return self
