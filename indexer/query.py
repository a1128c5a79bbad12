"""Answering selection queries against a datastore: target gradients, then exact search.

``QueryEngine`` owns the base model with the datastore's LoRA layout, each checkpoint's adapter
weights (kept in memory and swapped in), the projector rebuilt from the manifest, and the
memory-mapped features. A request reaches it as a ``TargetQuery``: targets tokenized once (with
the length limit checked on that one pass), checkpoint weights and k resolved once
(``prepare``). ``select_many`` serves several queries at once: one adapter swap per checkpoint
for all of them and one pass over the features for all their queries. Each request's targets
are still batched on their own, so its answer is the same alone or batched.
"""

from __future__ import annotations

import logging
import sys
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
from indexer.search import SearchParams, ShardSearcher
from indexer.token_limits import TokenCounter, within_cheap_size
from less_core.config import Aggregate, SelectionConfig
from less_core.data import Example, TokenizedExample, collate, tokenize_example
from less_core.errors import DataError, IndexMismatchError
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.projectors import make_projector
from less_core.scoring import subtask_queries
from less_core.search import QuerySet

log = logging.getLogger(__name__)

DEFAULT_SUBTASK = "default"


@dataclass(frozen=True)
class TargetQuery:
    """One request, ready for the engine: nothing in it is tokenized or resolved again.

    Attributes:
        targets: tokenized target examples, truncated to the datastore's max_length.
        subtasks: subtask label of each target.
        checkpoints: checkpoint names to score with, in manifest order.
        weights: their weights w_c (renormalised over the chosen checkpoints).
        k: rows to return.
        aggregate: how subtask scores combine.
        search: exact or approximate search options.
    """

    targets: Sequence[TokenizedExample]
    subtasks: Sequence[str]
    checkpoints: tuple[str, ...]
    weights: tuple[float, ...]
    k: int
    aggregate: Aggregate
    search: SearchParams = SearchParams()


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
        if check_model and model_fingerprint(model_dir) != manifest.model.sha256:
            raise IndexMismatchError(
                f"model at {model_dir} is not the model datastore {store.version} was built with"
            )
        self.store = store
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(model_dir)
        self.tokenization = manifest.tokenization
        self.model = load_lora_model(model_dir, manifest.lora, self.device)
        # Targets get the precision the pool was featurized with.
        self.grads = PerExampleGradients(self.model, manifest.build.autocast_dtype)
        if manifest.layout != self.grads.layout:
            raise IndexMismatchError("the model's LoRA layout differs from the datastore's")
        self.projector = make_projector(manifest.projector, manifest.layout)
        self.batch_size = target_batch_size or manifest.build.batch_size
        self.adapters = {
            name: load_file(
                str(store.path / "adapters" / name / ADAPTER_WEIGHTS), device=str(self.device)
            )
            for name in store.checkpoint_names
        }
        self.searcher = ShardSearcher(store, self.device)
        self._ids = store.ids

    @property
    def n(self) -> int:
        return self.store.n

    def tokenize_targets(
        self, examples: Sequence[Example], max_tokens: int | None = None
    ) -> list[TokenizedExample]:
        """Tokenizes each target once, checks its length, truncates it to max_length.

        With ``max_tokens``, a target larger than the limit in characters and messages is first
        counted cheaply (``indexer.token_limits``: work bounded by the limit, linear in the
        target, one template rendering per chat), so one far over the limit is refused without
        being tokenized whole; the others are tokenized exactly, with their loss masks.

        Args:
            examples: target examples.
            max_tokens: refuse a target longer than this many tokens (untruncated); None: no
                limit beyond truncation to the datastore's max_length.

        Raises:
            DataError: no targets, a target over ``max_tokens``, or one whose response is
                truncated away; the message names the target.
        """
        if not examples:
            raise DataError("no targets given")
        max_length = self.tokenization.max_length
        out = []
        for i, ex in enumerate(examples):
            if ex.messages and ex.messages[0]["role"] == "assistant":
                # Its response would start at the rendering of an empty chat, which chat
                # templates (and transformers 5) refuse: a 400 here, not a tokenizer error.
                raise DataError(f"targets[{i}]: a chat must not begin with an assistant turn")
            if max_tokens is not None and not within_cheap_size(ex, max_tokens):
                counter: TokenCounter | None = getattr(self, "_token_counter", None)
                if counter is None:  # made on first use: it renders a few chats
                    counter = self._token_counter = TokenCounter(self.tokenizer)
                n, exact = counter.example(ex, max_tokens)
                if n > max_tokens:
                    raise DataError(
                        f"targets[{i}] has {'' if exact else 'at least '}{n} tokens, "
                        f"more than the limit of {max_tokens}"
                    )
            full = tokenize_example(self.tokenizer, ex, sys.maxsize)
            if max_tokens is not None and len(full.input_ids) > max_tokens:
                raise DataError(
                    f"targets[{i}] has {len(full.input_ids)} tokens, "
                    f"more than the limit of {max_tokens}"
                )
            tok = full.truncated(max_length)
            if tok.n_response_tokens == 0:
                raise DataError(
                    f"target {ex.id or i}: response truncated away at max_length={max_length}"
                )
            out.append(tok)
        return out

    def resolve(self, config: SelectionConfig) -> tuple[tuple[str, ...], tuple[float, ...], int]:
        """Checkpoint names (manifest order), their weights and k for a selection config.

        Raises:
            CheckpointNotFoundError: an unknown checkpoint name.
            ConfigError: k larger than the pool, or a fraction selecting no row.
        """
        names, weights = self.store.manifest.weights(
            list(config.checkpoints) if config.checkpoints else None
        )
        return tuple(names), tuple(float(w) for w in weights), config.resolve_k(self.n)

    def prepare(
        self,
        examples: Sequence[Example],
        config: SelectionConfig,
        max_tokens: int | None = None,
        search: SearchParams | None = None,
    ) -> TargetQuery:
        """A ``TargetQuery`` from examples and a config (tokenized and resolved once)."""
        checkpoints, weights, k = self.resolve(config)
        return TargetQuery(
            targets=self.tokenize_targets(examples, max_tokens),
            subtasks=[ex.subtask or DEFAULT_SUBTASK for ex in examples],
            checkpoints=checkpoints,
            weights=weights,
            k=k,
            aggregate=config.aggregate,
            search=search or SearchParams(),
        )

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
        queries: Sequence[TargetQuery],
        on_gradients: Callable[[], None] | None = None,
    ) -> list[Selection]:
        """Answer several queries with one adapter swap per checkpoint and one search pass.

        ``on_gradients`` is called once the target features are computed, before the search
        (progress reporting for jobs).
        """
        t0 = time.perf_counter()
        wanted = {name for q in queries for name in q.checkpoints}
        needed = [n for n in self.store.checkpoint_names if n in wanted]  # manifest order
        feats = self.target_features([q.targets for q in queries], needed)
        t1 = time.perf_counter()
        if on_gradients is not None:
            on_gradients()

        query_sets, subtask_names = [], []
        for query, group_feats in zip(queries, feats):
            weight_of = dict(zip(query.checkpoints, query.weights))
            # Checkpoints a request leaves out get weight 0, so every query spans `needed`.
            subtasks, vectors = subtask_queries(
                group_feats, list(query.subtasks), [weight_of.get(n, 0.0) for n in needed]
            )
            query_sets.append(QuerySet(vectors, query.k, query.aggregate))
            subtask_names.append(subtasks)
        results = self.searcher.search(needed, query_sets, [q.search for q in queries])
        t2 = time.perf_counter()
        share = 1.0 / len(queries)
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

    def select(
        self,
        examples: Sequence[Example],
        config: SelectionConfig,
        search: SearchParams | None = None,
    ) -> Selection:
        """One selection from examples (tokenized once) and a config."""
        return self.select_many([self.prepare(examples, config, search=search)])[0]
