"""What the config's choices mean: which models exist and what they learn, the metrics each
reports and which way is better, each model's own loss, torchrec's sharding types and table
optimizers. The schema (`advrec.config.schema`) validates against these; the rest of advrec asks
them instead of restating them."""

from __future__ import annotations

from typing import Literal

MODEL_KINDS = {"mf": "ranking", "neumf": "ranking", "sasrec": "ranking", "twotower": "ranking",
               "deepfm": "ctr", "dcnv2": "ctr", "mmoe": "multitask"}
"""What each model is trained and evaluated for: top-K ranking, click-through rate, or several
tasks at once (`advrec.train.tasks`)."""
def ranking_models() -> list[str]:
    """The models evaluated by top-K lists."""
    return [m for m, kind in MODEL_KINDS.items() if kind == "ranking"]


FEATURE_MODELS = ("deepfm", "dcnv2", "twotower", "mmoe")
"""The models that use the users' and items' side features (when the dataset has them)."""
TASK_NAMES = ("click", "rating")
"""The multi-task model's objectives: click (rating >= data.label_threshold, BCE) and the rating
itself (MSE)."""


ADAPTIVE = Literal["none", "vat", "pamacf"]
"""The per-user budgets of ``adv.adaptive`` (`advrec.adversarial.adaptive`): none, VAT's or
PamaCF's."""


SHARDING_TYPE = Literal["table_wise", "column_wise", "row_wise", "table_row_wise",
                        "table_column_wise", "data_parallel"]
"""torchrec's sharding types (``ShardingType`` values) a table can be given (`model.sharding`)."""
ROW_SHARDING = ("row_wise", "table_row_wise")
"""The sharding types torchrec implements on CUDA only."""
TABLE_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad", "adam")
"""The fused in-backward table optimizers of ``model.embeddings=torchrec`` (FBGEMM's)."""
CPU_TABLE_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")
"""Those FBGEMM implements on CPU."""


RANKING_METRICS = ("ndcg", "recall", "hit", "mrr", "precision")
CTR_METRICS = ("auc", "logloss", "gauc")
BEYOND_CORPUS = ("coverage", "gini", "entropy")
BEYOND_PER_USER = ("avgpop", "tail", "novelty", "ild")
"""The beyond-accuracy metrics of ``eval.beyond`` (`advrec.metrics.beyond`): of all the lists
together, and per user's list (averaged)."""
BEYOND = (*BEYOND_CORPUS, *BEYOND_PER_USER)
LOWER_IS_BETTER = ("logloss", "rmse", "gini", "avgpop")
"""Where a lower value is better: the losses, and how concentrated and how popular the
recommended items are."""
TARGET = "target/"
"""The prefix of the target-item metrics (`advrec.metrics.target`): how far fake users pushed
the attacker's items, so lower is better."""
TARGET_METRICS = ("hr", "ndcg")


def target_metrics(k: int) -> list[str]:
    """The target-item metric keys an evaluated epoch reports at cut-off ``k``: T-HR and
    T-NDCG, ``target/hr@50`` and ``target/ndcg@50``."""
    return [f"{TARGET}{m}@{k}" for m in TARGET_METRICS]


def metric_mode(name: str) -> str:
    """Whether a search maximises (``max``) or minimises (``min``) a reported metric."""
    base = name.rsplit("/", 1)[-1].split("@")[0]
    lower = name != "objective" and (name.startswith(TARGET) or base in LOWER_IS_BETTER)
    return "min" if lower else "max"


def reported_metrics(kind: str, ks: list[int], beyond: bool = False) -> list[str]:
    """The metric keys evaluation reports for a model of ``kind`` (`MODEL_KINDS`), ranking
    metrics at every cut-off of ``ks``, and with ``beyond`` (``eval.beyond``) the
    beyond-accuracy ones."""
    if kind == "ctr":
        return list(CTR_METRICS)
    if kind == "multitask":
        return [*(f"click/{m}" for m in CTR_METRICS), "rating/rmse"]
    extra = BEYOND if beyond else ()
    return [f"{m}@{k}" for m in (*RANKING_METRICS, *extra) for k in ks]


def default_monitor(kind: str, ks: list[int]) -> str:
    """The valid metric early stopping watches unless ``train.monitor`` names one."""
    return {"ranking": f"ndcg@{ks[0]}", "ctr": "auc", "multitask": "click/auc"}[kind]


OWN_LOSS: dict[str, str | None] = {"twotower": "softmax", "deepfm": "bce", "dcnv2": "bce",
                                    "mmoe": None}
"""The models that train with a loss of their own (MMoE: its per-task losses)."""


def model_loss(model: str, configured: str | None) -> str | None:
    """The training loss of ``model``: its own, else ``train.loss`` (default bpr)."""
    return OWN_LOSS.get(model, configured or "bpr")


def table_optimizer(optimizer: str, configured: str | None) -> str:
    """The fused optimizer of torchrec tables: ``train.table_optimizer``, else the kind of
    ``train.optimizer`` (adam for adamw: FBGEMM has no decoupled weight decay)."""
    return configured or {"adamw": "adam"}.get(optimizer, optimizer)
