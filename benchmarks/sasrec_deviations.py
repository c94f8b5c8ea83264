"""Issue 18, point 5: the official SASRec block with one of ``nn.TransformerEncoderLayer``'s
deviations put back, to measure each alone (``sasrec_paper.py --deviations``).

advrec's block (``advrec.models.sasrec.Block``) is the official code's. The block it replaced was
``nn.TransformerEncoderLayer``; these are the five ways that block differed, each applied alone
by patching ``advrec.models.sasrec`` in the process that trains and tests (in-process training:
no Ray worker imports the module afresh). Each follows what PyTorch's layer does:

- ``attention-dropout``: dropout on the attention output too (the layer's ``dropout1``), beside
  the dropout on the attention weights;
- ``output-projection``: a linear map of the merged heads (``MultiheadAttention.out_proj``: the
  default ``nn.Linear`` draw, bias zero);
- ``identical-blocks``: every block starts as a copy of the first (``nn.TransformerEncoder``
  deep-copies one layer);
- ``default-ffn-init``: the feed-forward's linear maps keep ``nn.Linear``'s default draw
  (Kaiming-uniform) instead of Glorot with zero bias;
- ``layer-norm-eps``: LayerNorm eps 1e-5 (PyTorch's default) instead of 1e-8.

A patch changes how many random numbers model construction draws, so every parameter after it
starts from another draw: a single seed's difference smaller than the seeds' spread is noise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import Tensor, nn


def _after_init(cls: type, extra: Callable[[nn.Module, tuple, dict], None]) -> None:
    """Run ``extra(module, args, kwargs)`` after ``cls.__init__``."""
    init = cls.__init__

    @functools.wraps(init)
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        extra(self, args, kwargs)

    cls.__init__ = patched


def _wrap_attend(sasrec, output: Callable[[nn.Module], nn.Module]) -> None:
    """Block.attend's (B, L, d) result passed through ``output(block)``, a module each block
    gets at construction."""
    Block = sasrec.Block
    _after_init(Block, lambda block, args, kwargs: setattr(block, "deviation", output(block)))
    attend = Block.attend

    def patched(self, query: Tensor, x: Tensor, allowed: Tensor) -> Tensor:
        return self.deviation(attend(self, query, x, allowed))

    Block.attend = patched


def _projection(block: nn.Module) -> nn.Module:
    projection = nn.Linear(block.query.in_features, block.query.out_features)
    nn.init.zeros_(projection.bias)  # MultiheadAttention's out_proj: default weight, bias 0
    return projection


def _identical(model: nn.Module, args: tuple, kwargs: dict) -> None:
    for block in model.blocks[1:]:
        block.load_state_dict(model.blocks[0].state_dict())


def _default_ffn_init(block: nn.Module, args: tuple, kwargs: dict) -> None:
    for module in block.feed_forward:
        if isinstance(module, nn.Linear):
            module.reset_parameters()


def apply(name: str) -> None:
    """Put deviation ``name`` (one of ``DEVIATIONS``) into ``advrec.models.sasrec``."""
    from advrec.models import sasrec

    if name == "attention-dropout":
        _wrap_attend(sasrec, lambda block: nn.Dropout(block.attention_dropout))
    elif name == "output-projection":
        _wrap_attend(sasrec, _projection)
    elif name == "identical-blocks":
        _after_init(sasrec.SASRec, _identical)
    elif name == "default-ffn-init":
        _after_init(sasrec.Block, _default_ffn_init)
    elif name == "layer-norm-eps":
        sasrec.LAYER_NORM_EPS = 1e-5  # read when each LayerNorm is built
    else:
        raise ValueError(f"unknown deviation {name!r}; known: {', '.join(DEVIATIONS)}")


DEVIATIONS = ("attention-dropout", "output-projection", "identical-blocks", "default-ffn-init",
              "layer-norm-eps")
