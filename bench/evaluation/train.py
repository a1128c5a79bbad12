"""Training a fresh LoRA on a selection and measuring it: held-out loss and option accuracy.

One :class:`LoraRunner` holds the base model with LoRA attached; each training re-initialises the
adapters from its seed, trains them on the selected rows from their frozen-prefix states
(``bench.evaluation.frozen``) and evaluates: mean response-token loss on the task's held-out
rows, and, where the task has options, accuracy of ranking them by log-likelihood. Every method
gets the same training: epochs, batch, lr, schedule, seed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft.tuners.lora import LoraLayer
from transformers import get_linear_schedule_with_warmup

from bench.evaluation.data import OptionGroup
from bench.evaluation.frozen import PrefixStore, first_adapted_layer, from_prefix
from bench.evaluation.plan import Scale
from indexer.model_io import load_base_model
from less_core.config import LoraSettings
from less_core.lora import attach_lora
from less_core.lora_grads import response_losses
from less_core.scoring import l2_normalize

log = logging.getLogger(__name__)

EVAL_BATCH = 16
#: Share of the optimizer steps with a linear lr warmup (the paper's and the warmup's 3 %).
LR_WARMUP_RATIO = 0.03
ADAPTER = "default"


@dataclass(frozen=True)
class EvalSet:
    """What a trained model is measured on for one task: held-out rows and option sequences
    (row indices into ``store``)."""

    task: str
    store: PrefixStore
    eval_rows: tuple[int, ...]
    option_rows: dict[str, int]
    groups: tuple[OptionGroup, ...]


class LoraRunner:
    """The base model with one LoRA adapter, trained again from scratch for each selection."""

    def __init__(self, model_dir: Path, lora: LoraSettings, pad_token_id: int):
        base = load_base_model(model_dir, torch.device("cpu"))
        self.start = first_adapted_layer(lora, base.config.num_hidden_layers)
        self.model = attach_lora(base, lora)
        self.pad_token_id = pad_token_id

    def _reset(self, seed: int) -> None:
        """Fresh adapters drawn from ``seed`` (A: kaiming uniform, B: zero, as PEFT inits)."""
        torch.manual_seed(seed)
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                module.reset_lora_parameters(ADAPTER, True)

    def _losses(self, store: PrefixStore, rows: Sequence[int]) -> torch.Tensor:
        batch, states = store.batch(rows, self.pad_token_id)
        with from_prefix(self.model, self.start, states):
            return response_losses(self.model, batch)

    def train(self, store: PrefixStore, rows: Sequence[int], scale: Scale, seed: int) -> int:
        """Train fresh adapters on ``rows`` of ``store``; returns the optimizer steps taken."""
        self._reset(seed)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=scale.train_lr, weight_decay=0.0)
        n_steps = scale.steps(len(rows))
        schedule = get_linear_schedule_with_warmup(
            optimizer, round(LR_WARMUP_RATIO * n_steps), n_steps
        )
        order = torch.Generator().manual_seed(seed)
        steps = 0
        for _ in range(scale.train_epochs):
            perm = torch.randperm(len(rows), generator=order).tolist()
            for i in range(0, len(rows), scale.train_batch):
                loss = self._losses(store, [rows[j] for j in perm[i : i + scale.train_batch]])
                loss.mean().backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
        self.model.eval()
        return steps

    @contextmanager
    def base_model(self) -> Iterator[None]:
        """Within the block, the model is the base model (adapters bypassed)."""
        with self.model.disable_adapter():
            yield

    @torch.no_grad()
    def losses(self, store: PrefixStore, rows: Sequence[int]) -> np.ndarray:
        """Mean response-token loss of each row, in eval mode."""
        self.model.eval()
        out = [
            self._losses(store, rows[i : i + EVAL_BATCH]) for i in range(0, len(rows), EVAL_BATCH)
        ]
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    def evaluate(self, evalset: EvalSet) -> dict[str, float | int | None]:
        """Held-out loss, and accuracy of the highest-likelihood option where options exist."""
        loss = float(self.losses(evalset.store, evalset.eval_rows).mean())
        result: dict[str, float | int | None] = {"loss": loss, "accuracy": None, "n_choice": 0}
        if evalset.groups:
            rows = [evalset.option_rows[i] for g in evalset.groups for i in g.option_ids]
            per_row = self.losses(evalset.store, rows)
            n_tokens = np.array([evalset.store.tokens[r].n_response_tokens for r in rows])
            loglik = dict(zip(rows, -per_row * n_tokens))
            result["accuracy"] = option_accuracy(
                [[loglik[evalset.option_rows[i]] for i in g.option_ids] for g in evalset.groups],
                [g.correct for g in evalset.groups],
            )
            result["n_choice"] = len(evalset.groups)
        return result

    @torch.no_grad()
    def representations(self, store: PrefixStore, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """RDS features: the base model's final-layer hidden states (after the final norm),
        mean-pooled over the sequence and at its last token, each L2-normalized; (n, H)."""
        self.model.eval()
        mean, last = [], []
        with self.base_model():
            for i in range(0, len(rows), EVAL_BATCH):
                batch, states = store.batch(rows[i : i + EVAL_BATCH], self.pad_token_id)
                with from_prefix(self.model, self.start, states):
                    hidden = (
                        self.model.get_base_model()
                        .get_decoder()(
                            input_ids=batch.input_ids,
                            attention_mask=batch.attention_mask,
                            use_cache=False,
                        )
                        .last_hidden_state
                    )
                mask = batch.attention_mask.unsqueeze(-1).to(hidden.dtype)
                mean.append((hidden * mask).sum(1) / mask.sum(1))
                ends = batch.attention_mask.sum(1) - 1
                last.append(hidden[torch.arange(len(ends)), ends])
        return {"mean": l2_normalize(torch.cat(mean)), "last": l2_normalize(torch.cat(last))}


def option_accuracy(logliks: Sequence[Sequence[float]], correct: Sequence[int]) -> float:
    """Share of questions whose correct option has the highest log-likelihood (a tie counts as
    wrong: no option was preferred)."""
    hits = 0
    for scores, right in zip(logliks, correct):
        best = max(scores)
        hits += scores[right] == best and sum(s == best for s in scores) == 1
    return hits / len(correct)
