"""The zoo's models at test size: `model.*` options small enough for a tiny log and a fast step.

Shared by the zoo and the distributed tests (importable because pyproject's pytest
``pythonpath`` holds ``tests/``).
"""

MODELS = {
    "mf": {},
    "neumf": {"mlp_layers": [16]},
    "sasrec": {"max_len": 20, "layers": 1},
    "twotower": {"mlp_layers": [16]},
    "deepfm": {"mlp_layers": [16]},
    "dcnv2": {"mlp_layers": [16], "cross_layers": 2},
    "mmoe": {"mlp_layers": [16], "experts": 2},
}
