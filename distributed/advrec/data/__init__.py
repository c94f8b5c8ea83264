"""The data layer: read raw logs, prepare them into a dataset, load it, make synthetic logs."""

from advrec.data.dataset import Dataset, Interactions, is_prepared, load_dataset
from advrec.data.prepare import prepare
from advrec.data.readers import FORMATS, ColumnMap, read_log, read_recbole_features
from advrec.data.splits import SplitSpec, parse_split
from advrec.data.synth import synth

__all__ = [
    "FORMATS",
    "ColumnMap",
    "Dataset",
    "Interactions",
    "SplitSpec",
    "is_prepared",
    "load_dataset",
    "parse_split",
    "prepare",
    "read_log",
    "read_recbole_features",
    "synth",
]
