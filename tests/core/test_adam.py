"""The virtual Adam step (SPEC §2.3) and the optimizer-state readers, against hand-computed
numbers and against what a real ``torch.optim.Adam`` / ``AdamW`` does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from less_core.adam import adam_normalize
from less_core.errors import IndexMismatchError
from less_core.optimizer_state import adam_state_from_state_dict

BETAS, EPS = (0.9, 0.999), 1e-8
G = [0.1, -2.0, 0.0]
M = [0.01, 0.2, -0.3]
V = [1e-4, 4.0, 0.0]

# By hand:  m' = 0.9·m + 0.1·g            v' = 0.999·v + 0.001·g²
#   m' = [0.009 + 0.01, 0.18 - 0.2, -0.27 + 0]   = [0.019, -0.02, -0.27]
#   v' = [0.0000999 + 0.00001, 3.996 + 0.004, 0] = [1.099e-4, 4.0, 0.0]
M_NEW = np.array([0.019, -0.02, -0.27])
V_NEW = np.array([1.099e-4, 4.0, 0.0])

# float32 arithmetic against a float64 hand computation.
RTOL = 1e-6


def _t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_hand_computed_inside_no_bias_correction():
    """The LESS default: Γ = m' / sqrt(v' + eps)."""
    expected = np.array([0.019 / np.sqrt(1.0991e-4), -0.02 / np.sqrt(4.00000001), -0.27 / 1e-4])
    np.testing.assert_allclose(expected, M_NEW / np.sqrt(V_NEW + EPS), rtol=1e-12)
    out = adam_normalize(_t([G]), _t(M), _t(V), BETAS, EPS)
    assert out.dtype == torch.float32 and out.shape == (1, 3)
    np.testing.assert_allclose(out.double().numpy()[0], expected, rtol=RTOL)
    # the default is "inside"
    assert torch.equal(
        out, adam_normalize(_t([G]), _t(M), _t(V), BETAS, EPS, eps_placement="inside")
    )


def test_hand_computed_outside():
    """torch.optim.Adam's placement: Γ = m' / (sqrt(v') + eps)."""
    expected = np.array([0.019 / (np.sqrt(1.099e-4) + 1e-8), -0.02 / (2.0 + 1e-8), -0.27 / 1e-8])
    out = adam_normalize(_t([G]), _t(M), _t(V), BETAS, EPS, eps_placement="outside")
    np.testing.assert_allclose(out.double().numpy()[0], expected, rtol=RTOL)


@pytest.mark.parametrize("placement", ["inside", "outside"])
def test_hand_computed_bias_correction(placement):
    """bias_correction_step=t divides by 1 - β^(t+1), the correction of the *next* real step."""
    t = 9
    bc1, bc2 = 1 - 0.9**10, 1 - 0.999**10
    m_hat, v_hat = M_NEW / bc1, V_NEW / bc2
    if placement == "inside":
        expected = m_hat / np.sqrt(v_hat + EPS)
    else:
        expected = m_hat / (np.sqrt(v_hat) + EPS)
    out = adam_normalize(
        _t([G]), _t(M), _t(V), BETAS, EPS, eps_placement=placement, bias_correction_step=t
    )
    np.testing.assert_allclose(out.double().numpy()[0], expected, rtol=RTOL)


def test_batch_rows_are_independent_and_inputs_cast():
    """(B, d) gradients share one (d,) m and v; half-precision inputs give float32 features."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal((4, 6))
    m = rng.standard_normal(6) * 0.1
    v = rng.uniform(0, 1e-2, 6)
    betas, eps = (0.8, 0.99), 1e-6
    expected = (betas[0] * m + (1 - betas[0]) * g) / np.sqrt(
        betas[1] * v + (1 - betas[1]) * g**2 + eps
    )
    out = adam_normalize(torch.tensor(g), torch.tensor(m), torch.tensor(v), betas, eps)
    assert out.dtype == torch.float32 and out.shape == (4, 6)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=RTOL)
    for i in range(4):
        one = adam_normalize(
            torch.tensor(g[i : i + 1]), torch.tensor(m), torch.tensor(v), betas, eps
        )
        assert torch.equal(one[0], out[i])
    out_bf16 = adam_normalize(
        torch.tensor(g).bfloat16(), torch.tensor(m), torch.tensor(v), betas, eps
    )
    assert out_bf16.dtype == torch.float32


def test_adam_normalize_float32_accuracy():
    """With v = 0 the g² term is all of v': the formula in float32 should be good to ~1e-7."""
    g = np.array([[1.0, 0.1, -2.0, 3e-3]])
    out = adam_normalize(
        torch.tensor(g, dtype=torch.float32), torch.zeros(4), torch.zeros(4), BETAS, EPS
    )
    expected = (0.1 * g) / np.sqrt(0.001 * g**2 + EPS)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Against a real optimizer step
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("history", [0, 1, 6])
def test_outside_with_bias_correction_is_a_real_adam_step(history):
    """-lr · adam_normalize(g, m, v, outside, step) is the update torch.optim.Adam applies."""
    gen = torch.Generator().manual_seed(history)
    # float64 parameters: the update is read back without float32 cancellation.
    p = torch.nn.Parameter(torch.randn(40, dtype=torch.float64, generator=gen))
    lr, betas, eps = 3e-3, (0.85, 0.995), 1e-8
    opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps, foreach=False)
    for _ in range(history):
        p.grad = torch.randn(40, dtype=torch.float64, generator=gen) * torch.linspace(
            0.01, 3, 40, dtype=torch.float64
        )
        opt.step()
    st = opt.state.get(p, {})
    m = st["exp_avg"].clone() if st else torch.zeros(40, dtype=torch.float64)
    v = st["exp_avg_sq"].clone() if st else torch.zeros(40, dtype=torch.float64)
    step = int(st["step"]) if st else 0
    assert step == history

    g = torch.randn(40, dtype=torch.float64, generator=gen)
    g[3] = 0.0  # a coordinate without gradient still moves by its momentum
    before = p.detach().clone()
    p.grad = g.clone()
    opt.step()
    update = (p.detach() - before).numpy()

    gamma = adam_normalize(
        g[None], m, v, betas, eps, eps_placement="outside", bias_correction_step=step
    )
    # The update is read back as a difference of float32 parameters: cancellation costs digits.
    np.testing.assert_allclose(-lr * gamma[0].double().numpy(), update, rtol=1e-5, atol=1e-12)
    if history:
        assert update[3] != 0.0


# --------------------------------------------------------------------------------------------
# Optimizer state dicts
# --------------------------------------------------------------------------------------------
def _module():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # a frozen parameter is not in the state
    return model


def _trainable(model):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p.shape for _, p in named], [p for _, p in named]


def _train(model, opt, steps=3):
    for i in range(steps):
        opt.zero_grad()
        x = torch.randn(5, 3, generator=torch.Generator().manual_seed(i))
        model(x).square().sum().backward()
        opt.step()


def _supports_named_params() -> bool:
    try:
        opt = torch.optim.AdamW(torch.nn.Linear(1, 1).named_parameters())
    except Exception:
        return False
    return "param_names" in opt.state_dict()["param_groups"][0]


@pytest.mark.parametrize("with_names", [False, True])
def test_state_dict_round_trip(with_names):
    if with_names and not _supports_named_params():
        pytest.skip("this torch version does not record param_names")
    model = _module()
    names, shapes, params = _trainable(model)
    assert names == ["0.weight", "2.weight", "2.bias"]
    source = (
        [(n, p) for n, p in model.named_parameters() if p.requires_grad] if with_names else params
    )
    opt = torch.optim.AdamW(source, lr=1e-2, betas=(0.8, 0.95), eps=1e-7)
    _train(model, opt)
    sd = opt.state_dict()
    assert ("param_names" in sd["param_groups"][0]) == with_names
    state = adam_state_from_state_dict(sd, names, shapes)
    assert state.betas == (0.8, 0.95) and state.eps == pytest.approx(1e-7) and state.step == 3
    for n, p in zip(names, params):
        assert torch.equal(state.exp_avg[n], opt.state[p]["exp_avg"].reshape(-1))
        assert torch.equal(state.exp_avg_sq[n], opt.state[p]["exp_avg_sq"].reshape(-1))
    moments = state.moments(list(reversed(names)))
    assert torch.equal(moments[0][0], opt.state[params[-1]]["exp_avg"].reshape(-1))
    with pytest.raises(IndexMismatchError):
        state.moments(["nope"])


def test_groups_in_another_order_use_recorded_names():
    """HF Trainer splits decay / no-decay groups: ids then run in another order than
    named_parameters. Recorded names map them correctly; without names the shape check refuses."""
    if not _supports_named_params():
        pytest.skip("this torch version does not record param_names")
    model = _module()
    names, shapes, params = _trainable(model)
    named = dict((n, p) for n, p in model.named_parameters())
    decay = [(n, named[n]) for n in names if n.endswith("weight")]
    no_decay = [(n, named[n]) for n in names if n.endswith("bias")]
    # ids: 2.bias, 0.weight, 2.weight; named_parameters order: 0.weight, 2.weight, 2.bias.
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.1}]
    opt = torch.optim.AdamW(groups, lr=1e-2)
    _train(model, opt)
    sd = opt.state_dict()
    state = adam_state_from_state_dict(sd, names, shapes)
    for n in names:
        assert torch.equal(state.exp_avg[n], opt.state[named[n]]["exp_avg"].reshape(-1))
        assert torch.equal(state.exp_avg_sq[n], opt.state[named[n]]["exp_avg_sq"].reshape(-1))
    for g in sd["param_groups"]:
        del g["param_names"]
    with pytest.raises(IndexMismatchError):
        adam_state_from_state_dict(sd, names, shapes)


def test_state_dict_errors():
    model = _module()
    names, shapes, params = _trainable(model)
    opt = torch.optim.AdamW(params, lr=1e-2)
    _train(model, opt)
    sd = opt.state_dict()
    bad_shapes = list(shapes)
    bad_shapes[1] = torch.Size([4, 2])
    with pytest.raises(IndexMismatchError, match="shape"):
        adam_state_from_state_dict(sd, names, bad_shapes)
    with pytest.raises(IndexMismatchError):
        adam_state_from_state_dict(sd, names + ["extra"], shapes + [torch.Size([1])])
    with pytest.raises(IndexMismatchError):
        adam_state_from_state_dict(sd, names[:2], shapes[:2])
    with pytest.raises(IndexMismatchError):
        adam_state_from_state_dict({"state": {}}, names, shapes)
    # No step taken yet: no moments.
    fresh = torch.optim.AdamW(params, lr=1e-2).state_dict()
    with pytest.raises(IndexMismatchError):
        adam_state_from_state_dict(fresh, names, shapes)
