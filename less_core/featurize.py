"""LESS features of a batch: per-example LoRA gradients -> (Adam step) -> projection -> L2 norm."""

from __future__ import annotations

import torch

from less_core.adam import adam_normalize
from less_core.config import AdamFeatureConfig
from less_core.data import Batch
from less_core.errors import IndexMismatchError
from less_core.lora_grads import PerExampleGradients
from less_core.optimizer_state import AdamState
from less_core.projectors import Projector
from less_core.scoring import l2_normalize


class Featurizer:
    """Turns batches into L2-normalized projected gradient features for one checkpoint.

    With ``adam_state`` the training-example features of SPEC §2.3 are computed (one virtual
    Adam step on the checkpoint's real moments); without it the plain SGD gradient of §2.4
    (target examples).
    """

    def __init__(
        self,
        grads: PerExampleGradients,
        projector: Projector,
        adam_state: AdamState | None = None,
        adam_config: AdamFeatureConfig = AdamFeatureConfig(),
    ):
        if projector.layout != grads.layout:
            raise IndexMismatchError("projector layout differs from the model's LoRA layout")
        self.grads = grads
        self.projector = projector
        self.adam_config = adam_config
        self._moments: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if adam_state is not None:
            self._betas = adam_config.betas or adam_state.betas
            self._eps = adam_config.eps if adam_config.eps is not None else adam_state.eps
            self._step = adam_state.step if adam_config.bias_correction else None
            if adam_config.bias_correction and self._step is None:
                raise IndexMismatchError("bias correction needs the optimizer step count")
            device = next(grads.model.parameters()).device
            self._moments = [
                (m.to(device, torch.float32), v.to(device, torch.float32))
                for m, v in adam_state.moments(grads.layout.names)
            ]

    @property
    def kind(self) -> str:
        return "adam" if self._moments is not None else "sgd"

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and losses of a batch: ((B, P) float32 unit rows, (B,) losses)."""
        blocks, losses = self.grads.compute(batch)
        if self._moments is not None:
            blocks = [
                adam_normalize(
                    g,
                    m,
                    v,
                    self._betas,
                    self._eps,
                    eps_placement=self.adam_config.eps_placement,
                    bias_correction_step=self._step,
                )
                for g, (m, v) in zip(blocks, self._moments)
            ]
        return l2_normalize(self.projector.project(blocks)), losses
