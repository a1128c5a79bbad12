"""Answering selection queries against a datastore: target gradients, then exact search.

``QueryEngine`` owns the base model with the datastore's LoRA layout, each checkpoint's adapter
weights (kept in memory and swapped in), the projector rebuilt from the manifest, and the
memory-mapped features. ``select_many`` serves several requests at once: one adapter swap per
checkpoint for all of them and one pass over the features for all their queries. Each request's
targets are still batched on their own, so its answer is the same alone or batched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from indexer.datastore import Datastore
from indexer.model_io import (
    ADAPTER_WEIGHTS,
    load_lora_model,
    load_tokenizer,
    model_fingerprint,
    resolve_device,
)
from less_core.config import LoraSettings, ProjectionConfig, SelectionConfig, TokenizationConfig
from less_core.data import Example, TokenizedExample, collate, tokenize_example
from less_core.errors import DataError, IndexMismatchError
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.projectors import ModuleLayout, make_projector
from less_core.scoring import subtask_queries
from less_core.search import QuerySet, scan_select

log = logging.getLogger(__name__)

DEFAULT_SUBTASK = "default"


@dataclass(frozen=True)
class Selection:
    """Result of one request, best first."""

    ids: list[str]
    rows: list[int]
    scores: list[float]
    subtasks: list[str]
    n_candidates: int
    gradient_ms: float
    search_ms: float


class QueryEngine:
    """Computes target features and selects from one datastore version."""

    def __init__(
        self,
        store: Datastore,
        model_dir: str | Path,
        device: str | None = None,
        *,
        check_model: bool = True,
        target_batch_size: int | None = None,
    ):
        manifest = store.manifest
        if check_model and model_fingerprint(model_dir) != manifest["model"]["sha256"]:
            raise IndexMismatchError(
                f"model at {model_dir} is not the model datastore {store.version} was built with"
            )
        self.store = store
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(model_dir)
        self.tokenization = TokenizationConfig.from_dict(manifest["tokenization"])
        self.model = load_lora_model(
            model_dir, LoraSettings.from_dict(manifest["lora"]), self.device
        )
        self.grads = PerExampleGradients(self.model)
        stored = ModuleLayout(
            tuple(manifest["layout"]["names"]), tuple(manifest["layout"]["sizes"])
        )
        if stored != self.grads.layout:
            raise IndexMismatchError("the model's LoRA layout differs from the datastore's")
        self.projector = make_projector(ProjectionConfig.from_dict(manifest["projector"]), stored)
        self.batch_size = target_batch_size or int(manifest["build"]["batch_size"])
        self.adapters = {
            name: load_file(
                str(store.path / "adapters" / name / ADAPTER_WEIGHTS), device=str(self.device)
            )
            for name in store.checkpoint_names
        }
        self.features = {name: store.features(name) for name in store.checkpoint_names}
        self._ids = store.ids

    @property
    def n(self) -> int:
        return self.store.n

    def tokenize_targets(self, examples: Sequence[Example]) -> list[TokenizedExample]:
        """Tokenize targets; one whose response is truncated away is an error naming it."""
        if not examples:
            raise DataError("no targets given")
        out = []
        for i, ex in enumerate(examples):
            tok = tokenize_example(self.tokenizer, ex, self.tokenization.max_length)
            if tok.n_response_tokens == 0:
                raise DataError(
                    f"target {ex.id or i}: response truncated away at max_length={self.tokenization.max_length}"
                )
            out.append(tok)
        return out

    def target_features(
        self, groups: Sequence[Sequence[TokenizedExample]], checkpoints: Sequence[str]
    ) -> list[list[torch.Tensor]]:
        """SGD features of each group of targets at each checkpoint.

        Each group (one request's targets) is batched on its own, so its features do not
        depend on which other requests share the call: padding and batch shape change float
        rounding, and a request must get the same answer alone or batched.

        Returns:
            Per group, per checkpoint: (T_group, P) unit rows in the group's input order.
        """
        featurizer = Featurizer(self.grads, self.projector)
        out: list[list[torch.Tensor]] = [[] for _ in groups]
        for name in checkpoints:
            set_peft_model_state_dict(self.model, self.adapters[name])  # one swap per checkpoint
            for g, targets in enumerate(groups):
                # Length-sorted batches waste less padding; rows go back to input order.
                order = sorted(range(len(targets)), key=lambda i: len(targets[i].input_ids))
                feats = torch.empty(len(targets), self.projector.dim)
                for b in range(0, len(order), self.batch_size):
                    rows = order[b : b + self.batch_size]
                    batch = collate([targets[i] for i in rows], self.tokenizer.pad_token_id).to(
                        self.device
                    )
                    feats[rows] = featurizer(batch)[0].cpu()
                out[g].append(feats)
        return out

    def select_many(
        self,
        requests: Sequence[tuple[Sequence[Example], SelectionConfig]],
        on_gradients: Callable[[], None] | None = None,
    ) -> list[Selection]:
        """Answer several requests with one adapter swap per checkpoint and one search pass.

        ``on_gradients`` is called once the target features are computed, before the search
        (progress reporting for jobs).
        """
        t0 = time.perf_counter()
        groups, request_weights, needed = [], [], []
        for examples, config in requests:
            groups.append(self.tokenize_targets(examples))
            names, weights = self.store.weights(
                list(config.checkpoints) if config.checkpoints else None
            )
            request_weights.append(dict(zip(names, weights)))
            needed.extend(n for n in names if n not in needed)
        needed = [n for n in self.store.checkpoint_names if n in needed]  # manifest order
        feats = self.target_features(groups, needed)
        t1 = time.perf_counter()
        if on_gradients is not None:
            on_gradients()

        query_sets, subtask_names = [], []
        for (examples, config), group_feats, w in zip(requests, feats, request_weights):
            labels = [ex.subtask or DEFAULT_SUBTASK for ex in examples]
            # Checkpoints a request leaves out get weight 0, so every query spans `needed`.
            subtasks, queries = subtask_queries(
                group_feats, labels, [float(w.get(n, 0.0)) for n in needed]
            )
            query_sets.append(QuerySet(queries, config.resolve_k(self.n), config.aggregate))
            subtask_names.append(subtasks)
        results = scan_select([self.features[n] for n in needed], query_sets, device=self.device)
        t2 = time.perf_counter()
        share = 1.0 / len(requests)
        return [
            Selection(
                ids=[self._ids[r] for r in res.rows.tolist()],
                rows=res.rows.tolist(),
                scores=res.scores.tolist(),
                subtasks=[names[i] for i in res.best_subtask.tolist()],
                n_candidates=self.n,
                gradient_ms=(t1 - t0) * 1000 * share,
                search_ms=(t2 - t1) * 1000 * share,
            )
            for res, names in zip(results, subtask_names)
        ]

    def select(self, examples: Sequence[Example], config: SelectionConfig) -> Selection:
        return self.select_many([(examples, config)])[0]
