import pytest
import torch

from advrec.adversarial import AdversarialObjective, Attack, perturb, project
from advrec.models import LOSSES, MF, NeuMF
from embedding_loss import batch_loss

METHODS = ["random", "fgsm", "fgm", "pgd", "jsma"]


def _quadratic(x: dict[str, torch.Tensor], w: dict[str, torch.Tensor]):
    """loss(x) = sum((x - w)^2 * scale): a gradient we know by hand, 2 * (x - w) * scale."""
    def loss(z):
        return sum(((z[k] - w[k]) ** 2 * torch.arange(1, z[k].shape[-1] + 1)).sum() for k in z)

    def grad_fn(delta):
        delta = {k: d.clone().requires_grad_(True) for k, d in delta.items()}
        value = loss({k: x[k] + delta[k] for k in x})
        return dict(zip(delta, torch.autograd.grad(value, list(delta.values()))))
    return loss, grad_fn


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = {"user": torch.randn(6, 4, generator=g), "item": torch.randn(6, 3, 4, generator=g)}
    w = {k: torch.randn(v.shape, generator=g) for k, v in x.items()}
    return x, w


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("relative", [False, True])
def test_every_row_stays_inside_its_ball(method: str, norm: str, relative: bool) -> None:
    x, w = _inputs()
    _, grad_fn = _quadratic(x, w)
    eps = 0.3
    attack = Attack(method, eps, steps=5, norm=norm, random_start=True, relative=relative)
    delta = perturb(x, grad_fn, attack, generator=torch.Generator().manual_seed(0))
    for k, d in delta.items():
        radius = eps * x[k].norm(dim=-1) if relative else torch.full(d.shape[:-1], eps)
        # FGSM and JSMA are L-inf and FGM L2 by definition; the others follow `norm`
        linf = method in ("fgsm", "jsma") or (norm == "linf" and method != "fgm")
        row_norm = d.abs().amax(-1) if linf else d.norm(dim=-1)
        assert (row_norm <= radius * (1 + 1e-5) + 1e-7).all(), (k, row_norm.max(), radius.max())
        assert d.abs().sum() > 0


def test_fgm_matches_hand_computation() -> None:
    x, w = _inputs()
    _, grad_fn = _quadratic(x, w)
    delta = perturb(x, grad_fn, Attack("fgm", 0.5))
    for k in x:
        g = 2 * (x[k] - w[k]) * torch.arange(1, 5)
        torch.testing.assert_close(delta[k], 0.5 * g / g.norm(dim=-1, keepdim=True))


def test_fgsm_is_eps_times_sign() -> None:
    x, w = _inputs()
    _, grad_fn = _quadratic(x, w)
    delta = perturb(x, grad_fn, Attack("fgsm", 0.2))
    for k in x:
        torch.testing.assert_close(delta[k], 0.2 * torch.sign(x[k] - w[k]))


def test_init_grad_replaces_the_first_gradient_pass() -> None:
    x, w = _inputs()
    _, grad_fn = _quadratic(x, w)
    calls = []
    counted = lambda d: calls.append(1) or grad_fn(d)
    g0 = grad_fn({k: torch.zeros_like(v) for k, v in x.items()})
    fgm = perturb(x, counted, Attack("fgm", 0.5), init_grad=g0)
    pgd = perturb(x, counted, Attack("pgd", 0.5, steps=4), init_grad=g0)
    assert len(calls) == 3  # FGM: none; PGD-4: steps 2, 3 and 4
    torch.testing.assert_close(fgm, perturb(x, grad_fn, Attack("fgm", 0.5)))
    torch.testing.assert_close(pgd, perturb(x, grad_fn, Attack("pgd", 0.5, steps=4)))


def test_project_l2_and_linf() -> None:
    d = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    torch.testing.assert_close(project(d, 1.0, "l2"), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    torch.testing.assert_close(project(d, 0.35, "linf"), torch.tensor([[0.35, 0.35], [0.3, 0.35]]))


@pytest.mark.parametrize("model_cls", [MF, NeuMF])
@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
def test_pgd_raises_the_loss_at_least_as_much_as_fgm(model_cls, eps: float) -> None:
    torch.manual_seed(0)
    model = MF(30, 40, 8) if model_cls is MF else NeuMF(30, 40, 8, [16, 8])
    emb, loss_at, grad_fn, g = batch_loss(model)
    clean = loss_at({k: torch.zeros_like(v) for k, v in emb.items()})
    fgm = loss_at(perturb(emb, grad_fn, Attack("fgm", eps)))
    pgd = loss_at(perturb(emb, grad_fn, Attack("pgd", eps, steps=10)))
    rnd = loss_at(perturb(emb, grad_fn, Attack("random", eps), generator=g))
    assert fgm > clean
    assert pgd >= fgm - 1e-6
    assert fgm > rnd  # a gradient attack beats noise of the same size


@pytest.mark.parametrize("method", METHODS)
def test_objective_is_clean_plus_lambda_adv_and_leaves_no_gradients(method: str) -> None:
    torch.manual_seed(0)
    model = NeuMF(20, 30, 8, [16])
    attack = Attack(method, 0.5, steps=3)
    objective = AdversarialObjective(model, LOSSES["bpr"], attack, lam=0.7, target="item")
    batch = {"user": torch.randint(20, (16,)), "item": torch.randint(30, (16, 2))}
    out = objective(batch, adversarial=True, generator=torch.Generator().manual_seed(0))
    # the attack's inner gradients were taken w.r.t. delta only: no parameter gradient yet
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(out["loss"].detach(), out["clean"] + 0.7 * out["adv"])
    assert out["adv"] > out["clean"] or method == "random"
    out["loss"].backward()
    assert model.item_gmf.weight.grad is not None


def test_objective_target_user_only_perturbs_user_rows() -> None:
    torch.manual_seed(0)
    model = MF(20, 30, 8)
    objective = AdversarialObjective(model, LOSSES["bpr"], Attack("fgm", 0.5), lam=1.0, target="user")
    batch = {"user": torch.randint(20, (16,)), "item": torch.randint(30, (16, 2))}
    emb = model.embed(batch)
    delta = objective._delta(emb, ["user"], None, batch, None, objective.attack)
    assert set(delta) == {"user"}
    clean = objective(batch, adversarial=False)
    assert "adv" not in clean and torch.equal(clean["loss"].detach(), clean["clean"])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_one_pgd_step_from_zero_is_the_fast_gradient_step(norm: str) -> None:
    # PGD-1 with alpha > eps projects alpha * direction back to eps * direction: FGM (L2), FGSM (L-inf)
    x, w = _inputs()
    _, grad_fn = _quadratic(x, w)
    pgd = perturb(x, grad_fn, Attack("pgd", 0.3, steps=1, norm=norm))
    fast = perturb(x, grad_fn, Attack("fgm" if norm == "l2" else "fgsm", 0.3))
    torch.testing.assert_close(pgd, fast)


@pytest.mark.parametrize("model_cls", [MF, NeuMF])
@pytest.mark.parametrize("attack", [Attack("fgm", 0.5), Attack("pgd", 0.5, steps=3)], ids=["fgm", "pgd3"])
def test_objective_gradients_equal_plain_autograd_of_clean_plus_lambda_adv(model_cls, attack) -> None:
    # the objective differentiates the clean graph once and replays it; the parameter gradients
    # must equal those of backpropagating L_clean + λ·L(x + δ) + reg the plain way, at the same δ
    torch.manual_seed(0)
    model = model_cls(20, 30, 8) if model_cls is MF else model_cls(20, 30, 8, [16])
    objective = AdversarialObjective(model, LOSSES["bpr"], attack, lam=0.7, reg=0.01)
    batch = {"user": torch.randint(20, (16,)), "item": torch.randint(30, (16, 2))}
    objective(batch, adversarial=True)["loss"].backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    emb = model.embed(batch)
    delta = objective._delta(emb, list(emb), None, batch, None, objective.attack)
    clean = LOSSES["bpr"](model.score(emb, batch))
    adv = LOSSES["bpr"](model.score({k: v + delta[k] for k, v in emb.items()}, batch))
    reg = 0.01 * sum(v.pow(2).sum() for v in emb.values()) / 16
    (clean + 0.7 * adv + reg).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(got[name], param.grad, msg=name)
