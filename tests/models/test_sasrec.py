import pytest
import torch
import torch.nn.functional as F

from advrec.errors import AdvrecError
from advrec.models import LOSSES
from advrec.models.losses import batch_loss
from advrec.models.sasrec import SASRec

N_ITEMS, D = 20, 16


def _model(max_len: int = 8) -> SASRec:
    torch.manual_seed(0)
    return SASRec(num_users=5, num_items=N_ITEMS, dim=D, max_len=max_len, layers=2, heads=2)


def _left_pad(history: list[int], length: int) -> torch.Tensor:
    return torch.tensor([N_ITEMS] * (length - len(history)) + history)


def test_shapes_and_backward() -> None:
    model = _model()
    seq = torch.stack([_left_pad([1, 2, 3], 8), _left_pad(list(range(4, 12)), 8)])
    items = torch.randint(N_ITEMS, (2, 8, 3))
    emb = model.embed({"seq": seq, "item": items})
    assert emb["item_seq"].shape == (2, 8, D) and emb["item"].shape == (2, 8, 3, D)
    logits = model.score(emb, {"seq": seq, "item": items})
    assert logits.shape == (2, 8, 3)
    LOSSES["bce"](logits[seq != N_ITEMS]).backward()
    assert model.item.weight.grad[N_ITEMS].abs().sum() == 0  # the padding row never learns
    assert all(p.grad is not None for p in model.parameters())


def test_causality_later_items_never_change_earlier_outputs() -> None:
    model = _model().eval()
    a = _left_pad([1, 2, 3, 4, 5], 8).unsqueeze(0)
    b = a.clone()
    b[0, -1] = 9  # change only the last item
    ha, hb = (model.hidden(model.item(s), s) for s in (a, b))
    torch.testing.assert_close(ha[:, :-1], hb[:, :-1])
    assert not torch.allclose(ha[:, -1], hb[:, -1])


def test_padding_never_leaks_into_scores() -> None:
    model = _model(max_len=12).eval()
    history = [3, 1, 4, 1, 5]
    short, long = _left_pad(history, 6).unsqueeze(0), _left_pad(history, 12).unsqueeze(0)
    h_short = model.hidden(model.item(short), short)
    h_long = model.hidden(model.item(long), long)
    torch.testing.assert_close(h_short[:, -5:], h_long[:, -5:])  # same history, more padding
    assert h_long[:, :-5].abs().sum() == 0  # padded positions output nothing
    assert torch.isfinite(h_long).all()
    torch.testing.assert_close(model.rank_scores({"seq": short}), model.rank_scores({"seq": long}))


def test_rank_scores_match_candidate_scoring_at_the_last_position() -> None:
    model = _model().eval()
    seq = torch.stack([_left_pad([1, 2], 8), _left_pad([7, 8, 9, 10], 8)])
    all_items = torch.arange(N_ITEMS).expand(2, 8, -1)
    full = model.score(model.embed({"seq": seq, "item": all_items}), {"seq": seq})[:, -1]
    torch.testing.assert_close(model.rank_scores({"seq": seq}), full)
    some = torch.tensor([[3, 5], [0, 19]])
    torch.testing.assert_close(model.score_candidates({"seq": seq}, some), full.gather(1, some))


def test_full_softmax_is_cross_entropy_over_every_item() -> None:
    model = _model().eval()  # no dropout: the hand computation reruns the transformer
    seq = torch.stack([_left_pad([1, 2, 3], 8), _left_pad(list(range(4, 12)), 8)])
    target = torch.cat([seq[:, 1:], torch.tensor([[5], [0]])], 1)  # the next item; pad after pad
    mask = (seq != N_ITEMS) & (target != N_ITEMS)
    batch = {"seq": seq, "target": target, "mask": mask}
    emb = model.embed(batch)
    assert emb["item"].shape == (N_ITEMS, D)  # every real item's row, no padding row
    logits = model.score(emb, batch)
    assert logits.shape == (2, 8, 1 + N_ITEMS)
    by_hand = model.hidden(emb["item_seq"], seq) @ model.item.weight[:N_ITEMS].T  # (B, L, N)
    torch.testing.assert_close(logits[..., 0], by_hand.gather(-1, target.clamp(max=N_ITEMS - 1)
                                                              .unsqueeze(-1)).squeeze(-1))
    expected = F.cross_entropy(by_hand[mask], target[mask])
    torch.testing.assert_close(batch_loss(LOSSES["softmax"], logits, batch), expected)
    # bce over every item stays finite although the target's duplicate column is masked out
    assert torch.isfinite(batch_loss(LOSSES["bce"], logits, batch))


def test_item_table_is_listed_once() -> None:
    assert list(_model().tables()) == ["item"]


def test_non_positive_max_len_is_an_error() -> None:
    with pytest.raises(AdvrecError, match="model.max_len"):
        SASRec(5, N_ITEMS, D, max_len=0)


def test_positions_start_at_the_item_tables_scale_not_n01() -> None:
    """Fix 1 of issue 18: the position table is drawn by the item table's rule (Glorot), so
    positions start at the references' ratio to the √d-scaled item rows, not 14x above them."""
    torch.manual_seed(0)
    items, dim, max_len = 1682, 64, 200
    model = SASRec(num_users=5, num_items=items, dim=dim, max_len=max_len)
    position_std = model.position.weight.std().item()
    assert position_std == pytest.approx((2 / (max_len + dim)) ** 0.5, rel=0.05)
    scaled_items = (model.item.weight[:items] * dim ** 0.5).std().item()
    # about 3:1 for ml-100k's shape (the official code's Glorot tables); N(0, 1) gave 1:3.7
    assert 2 < scaled_items / position_std < 4
    normal = SASRec(num_users=5, num_items=items, dim=dim, max_len=max_len, init="normal",
                    init_std=0.01)
    assert normal.position.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_blocks_are_drawn_each_on_its_own_as_the_reference_builds_them() -> None:
    model = _model()
    first, second = model.blocks
    assert not torch.equal(first.query.weight, second.query.weight)  # no deep copy of one block
    assert first.attention_norm.eps == first.feed_forward_norm.eps == model.norm.eps == 1e-8
    assert all(b.query.bias.abs().sum() == 0 for b in model.blocks)
    # attention without an output projection: the block's linear maps are q, k, v and the
    # feed-forward's two
    assert sum(isinstance(m, torch.nn.Linear) for m in first.modules()) == 5


def test_block_is_the_official_codes_formula() -> None:
    """kang205/SASRec's block, written out for one head: the query is LN(x), keys and values
    the raw x, the residual adds LN(x), and the feed-forward adds its own normalised input."""
    from advrec.models.sasrec import Block

    torch.manual_seed(0)
    block = Block(D, heads=1, dropout=0.5).eval()
    x = torch.randn(2, 5, D)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    q = F.layer_norm(x, (D,), block.attention_norm.weight, block.attention_norm.bias, 1e-8)
    logits = block.query(q) @ block.key(x).transpose(1, 2) / D ** 0.5
    attended = logits.masked_fill(~causal, float("-inf")).softmax(-1) @ block.value(x)
    y = F.layer_norm(q + attended, (D,), block.feed_forward_norm.weight,
                     block.feed_forward_norm.bias, 1e-8)
    ff = block.feed_forward
    expected = y + ff[3](torch.relu(ff[0](y)))
    assert torch.allclose(block(x, causal.expand(2, 5, 5)), expected, atol=1e-5)
