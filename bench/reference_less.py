"""A faithful re-implementation of the LESS reference featurizer (princeton-nlp/LESS,
``less/data_selection/collect_grad_reps.py``) for side-by-side benchmarks.

What the reference does on a CPU, kept here on purpose:
- one example at a time: ``loss = model(**batch).loss; loss.backward()`` (batch size 1);
- flattens every LoRA gradient into one full vector (``torch.cat([p.grad.view(-1) ...])``);
- applies the Adam step with hard-coded betas/eps, eps inside the square root;
- collects ``project_interval = 16`` full vectors, then projects them together with TRAK's
  ``BasicProjector`` (the CPU fallback of ``get_trak_projector``), which regenerates the dense
  Rademacher matrix block by block (``block_size = 128`` output columns at a time, a
  ``torch.Generator`` re-seeded per block) on every ``project`` call;
- normalizes at the end.
``KeptDenseProjector`` is the best case of that procedure: the same dense matrix generated once.
"""

from __future__ import annotations

import math

import torch

PROJECT_INTERVAL = 16
TRAK_BLOCK_SIZE = 128


class TrakBasicProjector:
    """TRAK's BasicProjector (rademacher): regenerates Π block by block on each call."""

    def __init__(
        self, grad_dim: int, proj_dim: int, seed: int = 0, block_size: int = TRAK_BLOCK_SIZE
    ):
        self.grad_dim, self.proj_dim, self.seed = grad_dim, proj_dim, seed
        self.block_size = min(proj_dim, block_size)
        self.num_blocks = math.ceil(proj_dim / self.block_size)
        self.generator = torch.Generator()
        self.states = []
        for i in range(self.num_blocks):
            self.generator.manual_seed(seed + i)
            self.states.append(self.generator.get_state())
        self.proj_matrix = torch.empty(grad_dim, self.block_size)

    def _generate(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
        self.proj_matrix.bernoulli_(p=0.5, generator=self.generator)
        self.proj_matrix *= 2.0
        self.proj_matrix -= 1.0

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        sketch = torch.zeros(grads.size(0), self.proj_dim)
        for i in range(self.num_blocks):
            self._generate(self.states[i])
            st, ed = i * self.block_size, min((i + 1) * self.block_size, self.proj_dim)
            sketch[:, st:ed] = grads @ self.proj_matrix[:, : ed - st]
        return sketch


class KeptDenseProjector:
    """The same kind of dense Rademacher matrix, generated once and kept in memory."""

    def __init__(self, grad_dim: int, proj_dim: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.matrix = (
            torch.empty(grad_dim, proj_dim).bernoulli_(0.5, generator=generator).mul_(2).sub_(1)
        )

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        return grads @ self.matrix


def reference_featurize(
    model, examples, moments, projector, *, betas=(0.9, 0.999), eps=1e-8
) -> torch.Tensor:
    """Features of ``examples`` (list of (input_ids, labels) lists) the reference way.

    Args:
        moments: (exp_avg, exp_avg_sq), each a full flattened (d,) vector, in parameter order.

    Returns:
        (n, P) L2-normalized features.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    avg, avg_sq = moments
    full_grads, projected = [], []
    for input_ids, labels in examples:
        model.zero_grad()
        loss = model(input_ids=torch.tensor([input_ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        g = torch.cat([p.grad.view(-1) for p in params])
        m = betas[0] * avg + (1 - betas[0]) * g
        v = betas[1] * avg_sq + (1 - betas[1]) * g**2
        full_grads.append(m / torch.sqrt(v + eps))
        if len(full_grads) == PROJECT_INTERVAL:
            projected.append(projector.project(torch.stack(full_grads)))
            full_grads = []
    if full_grads:
        projected.append(projector.project(torch.stack(full_grads)))
    feats = torch.cat(projected)
    return feats / feats.norm(dim=1, keepdim=True)
