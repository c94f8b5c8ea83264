"""The data layer: read raw logs, prepare them into a dataset, load it, make synthetic logs."""

from advrec.data.dataset import Dataset, Interactions, is_prepared, load_dataset
from advrec.data.features import FeatureSet, Field, load_features
from advrec.data.prepare import prepare
from advrec.data.readers import FORMATS, ColumnMap, read_log, read_recbole_features
from advrec.data.splits import SplitSpec, parse_split
from advrec.data.synth import synth

__all__ = [
    "FORMATS",
    "ColumnMap",
    "Dataset",
    "FeatureSet",
    "Field",
    "Interactions",
    "SplitSpec",
    "is_prepared",
    "load_dataset",
    "load_features",
    "parse_split",
    "prepare",
    "read_log",
    "read_recbole_features",
    "synth",
]
