"""The virtual Adam step that turns a training gradient into a LESS feature (SPEC §2.3)."""

from __future__ import annotations

import torch

from less_core.config import EpsPlacement


def adam_normalize(
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    betas: tuple[float, float],
    eps: float,
    *,
    eps_placement: EpsPlacement = "inside",
    bias_correction_step: int | None = None,
) -> torch.Tensor:
    """Apply one virtual Adam update direction to per-example gradients.

    m' = β1·m + (1−β1)·g,  v' = β2·v + (1−β2)·g²,  Γ = m' / sqrt(v' + eps)

    ``eps_placement="inside"`` is what the LESS reference computes (eps under the square root);
    ``"outside"`` is torch.optim.Adam's m'/(sqrt(v') + eps). With ``bias_correction_step=t``
    m' and v' are divided by (1 − β^(t+1)) as a real Adam step t+1 would; the default (None)
    applies no bias correction, like the reference.

    Args:
        grad: (B, d) per-example gradients.
        exp_avg: (d,) Adam first moment m of the checkpoint.
        exp_avg_sq: (d,) Adam second moment v of the checkpoint.
        betas: (β1, β2) of the optimizer that wrote the state.
        eps: the optimizer's epsilon.

    Returns:
        (B, d) float32 tensor Γ.
    """
    beta1, beta2 = betas
    g = grad.to(torch.float32)
    m = exp_avg.to(torch.float32)
    v = exp_avg_sq.to(torch.float32)
    # Coefficients are formed in double precision: float32 lerp weights would turn 1−β2 into
    # 0.00099998713 and shift Γ by ~7e-6 relative.
    m_new = torch.add(g * (1.0 - beta1), m, alpha=beta1)
    v_new = torch.add(g.square() * (1.0 - beta2), v, alpha=beta2)
    if bias_correction_step is not None:
        t = bias_correction_step + 1
        m_new = m_new / (1.0 - beta1**t)
        v_new = v_new / (1.0 - beta2**t)
    if eps_placement == "inside":
        return m_new / torch.sqrt(v_new + eps)
    return m_new / (torch.sqrt(v_new) + eps)
