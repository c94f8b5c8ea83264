"""The typed run config: one YAML file plus ``key=value`` overrides, validated by pydantic.

Three parts: the schema (`schema`: a model per section and `RunConfig`), the policy it checks
against (`policy`: models, metrics, losses, table optimizers) and reading it (`overrides` and
`load`: YAML files and overrides to a validated config). This module is their public face.
"""

from advrec.config.load import (
    build_config,
    dump_config,
    error_line,
    load_config,
    load_raw,
    read_mapping,
)
from advrec.config.overrides import apply_overrides, key_text, with_values
from advrec.config.policy import TASK_NAMES, metric_mode
from advrec.config.schema import (
    ADAM_KINDS,
    ATTACKS,
    BUDGET_ATTACKS,
    AdvConfig,
    Adversary,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    ScalingConfig,
    SearchDim,
    Section,
    TrainConfig,
    TuneConfig,
    no_fields,
    no_histories,
)

__all__ = [
    "ADAM_KINDS", "ATTACKS", "BUDGET_ATTACKS", "TASK_NAMES",
    "AdvConfig", "Adversary", "DataConfig", "EvalConfig", "ModelConfig", "RunConfig", "ScalingConfig",
    "SearchDim", "Section", "TrainConfig", "TuneConfig", "apply_overrides", "build_config",
    "dump_config", "error_line", "key_text", "load_config", "load_raw", "metric_mode",
    "no_fields", "no_histories", "read_mapping", "with_values",
]
