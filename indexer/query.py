"""Answering selection queries against a datastore: target gradients, then exact search.

``QueryEngine`` owns the base model with the datastore's LoRA layout, each checkpoint's adapter
weights (kept in memory and swapped in), the projector rebuilt from the manifest, and the
memory-mapped features. A request reaches it as a ``TargetQuery``: targets tokenized once (with
the length limit checked on that one pass), checkpoint weights and k resolved once
(``prepare``). ``select_many`` serves several queries at once: one adapter swap per checkpoint
for all of them and one pass over the features for all their queries. Each request's targets
are still batched on their own, so its answer is the same alone or batched.

``select_each`` keeps requests apart when something fails: a request whose target gradients
fail (a NaN loss, out of memory, an adapter that cannot be swapped in), whose search fails or
whose answer cannot be assembled gets a ``QueryFailure`` naming the stage, and the others in the
same call are answered as they would be alone; nothing already computed is computed again.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from indexer.datastore import Datastore, feature_file
from indexer.model_io import (
    ADAPTER_WEIGHTS,
    load_lora_model,
    load_tokenizer,
    model_fingerprint,
    resolve_device,
)
from indexer.requests import examples_from_targets, search_params, selection_config, steering_of
from indexer.search import SearchParams, ShardSearcher
from indexer.steered import (
    Eligible,
    RowExplanation,
    SteeredPlan,
    Steering,
    plan_query,
    resolve_selection,
)
from indexer.token_limits import TokenCounter, within_cheap_size
from less_core.config import Aggregate, SelectionConfig
from less_core.data import Example, TokenizedExample, collate, tokenize_example
from less_core.errors import ConfigError, DataError, IndexMismatchError, IntegrityError
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.projectors import make_projector
from less_core.search import SearchResult
from less_wire import SelectRequest

log = logging.getLogger(__name__)

DEFAULT_SUBTASK = "default"

STAGE_GRADIENTS = "computing target gradients"
STAGE_SEARCH = "searching the datastore"
STAGE_RESULT = "assembling the result"


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or host) allocation failure, however torch reported it."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _release_memory(exc: BaseException) -> None:
    """After an allocation failure: drop the failed batch's tensors (held by the traceback's
    frames) and give cached blocks back, so the requests after it get the memory."""
    if is_out_of_memory(exc):
        exc.__traceback__ = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _targets_named(rows: Sequence[int]) -> str:
    rows = sorted(rows)
    return f"targets[{rows[0]}]" if len(rows) == 1 else f"one of targets{rows}"


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
        features: the SGD features of the targets, then of the avoid examples, at each of
            ``checkpoints`` (that order), computed before (a job resumed after a restart);
            None: computed by the engine.
        avoid: tokenized examples whose direction to avoid (``steering.avoid_weight``).
        steering: filter, budget, balance, guard, explain.
        eligible: the rows it may take and how many (None: every row, ``k``).
        target_ids: each target's id (or None), for explanations.
    """

    targets: Sequence[TokenizedExample]
    subtasks: Sequence[str]
    checkpoints: tuple[str, ...]
    weights: tuple[float, ...]
    k: int
    aggregate: Aggregate
    search: SearchParams = SearchParams()
    features: Sequence[torch.Tensor] | None = None
    avoid: Sequence[TokenizedExample] = ()
    steering: Steering = Steering()
    eligible: Eligible | None = None
    target_ids: Sequence[str | None] = ()

    @property
    def examples(self) -> list[TokenizedExample]:
        """What the engine featurizes for this query: the targets, then the avoid examples."""
        return [*self.targets, *self.avoid]


@dataclass(frozen=True)
class QueryFailure:
    """Why one query of ``select_each`` got no answer: the stage (``STAGE_*``) and the error."""

    stage: str
    error: Exception


FeaturesHook = Callable[[Sequence[Sequence[torch.Tensor] | None]], None]
"""Called by ``select_each`` with each query's target features (per checkpoint of the query,
in its order), None for a query whose gradients failed."""


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
    n_tokens: int | None = None
    explanations: list[RowExplanation] | None = None


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
        self.adapters = {name: self._load_adapter(name) for name in store.checkpoint_names}
        self._check_feature_files()
        self.searcher = ShardSearcher(store, self.device)
        self._ids = store.ids

    @property
    def n(self) -> int:
        return self.store.n

    def _load_adapter(self, name: str) -> dict[str, torch.Tensor]:
        """A checkpoint's LoRA weights, checked: readable, finite, and swapping in every LoRA
        weight of the model (a missing one would silently keep the previous checkpoint's).

        Raises:
            IntegrityError: naming the checkpoint and what is wrong.
        """
        path = self.store.path / "adapters" / name / ADAPTER_WEIGHTS
        try:
            weights = load_file(str(path), device=str(self.device))
        except Exception as exc:  # safetensors raises its own error type for a corrupt file
            raise IntegrityError(f"adapter of checkpoint {name} is unreadable: {exc}") from exc
        for key, tensor in weights.items():
            if not bool(torch.isfinite(tensor).all()):
                raise IntegrityError(f"adapter of checkpoint {name}: {key} is not finite")
        try:
            result = set_peft_model_state_dict(self.model, weights)
        except Exception as exc:
            raise IntegrityError(f"adapter of checkpoint {name} does not fit: {exc}") from exc
        missing = [k for k in getattr(result, "missing_keys", ()) if "lora_" in k]
        unexpected = list(getattr(result, "unexpected_keys", ()))
        if missing or unexpected:
            raise IntegrityError(
                f"adapter of checkpoint {name} does not match the model's LoRA layout "
                f"(missing {missing[:2]}, unexpected {unexpected[:2]})"
            )
        return weights

    def _check_feature_files(self) -> None:
        """Every shard's feature file opens with the manifest's shape and dtype.

        Raises:
            IntegrityError: naming the file (truncated, missing, or of another shape).
        """
        m = self.store.manifest
        for shard in self.store.shards:
            for name in self.store.checkpoint_names:
                path = self.store.shard_dir(shard) / feature_file(name)
                where = path.relative_to(self.store.path)
                try:
                    feats = np.load(path, mmap_mode="r")
                except Exception as exc:  # missing, truncated, not an .npy file
                    raise IntegrityError(f"feature file {where} cannot be read: {exc}") from exc
                want = (shard.n, m.features.dim)
                if feats.shape != want or feats.dtype != np.dtype(m.features.dtype):
                    raise IntegrityError(
                        f"feature file {where} holds {feats.dtype} {feats.shape}, "
                        f"the manifest says {m.features.dtype} {want}"
                    )

    def _swap(self, name: str) -> None:
        """Loads a checkpoint's adapter into the model (IntegrityError if it cannot be)."""
        try:
            set_peft_model_state_dict(self.model, self.adapters[name])
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            raise IntegrityError(
                f"adapter of checkpoint {name} cannot be swapped in: {type(exc).__name__}"
            ) from exc

    def tokenize_targets(
        self, examples: Sequence[Example], max_tokens: int | None = None, label: str = "targets"
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
            label: what the examples are called in error messages ("targets", "avoid").

        Raises:
            DataError: no targets, a target over ``max_tokens``, or one whose response is
                truncated away; the message names the target.
        """
        if not examples:
            raise DataError(f"no {label} given")
        max_length = self.tokenization.max_length
        out = []
        for i, ex in enumerate(examples):
            if ex.messages and ex.messages[0]["role"] == "assistant":
                # Its response would start at the rendering of an empty chat, which chat
                # templates (and transformers 5) refuse: a 400 here, not a tokenizer error.
                raise DataError(f"{label}[{i}]: a chat must not begin with an assistant turn")
            if max_tokens is not None and not within_cheap_size(ex, max_tokens):
                counter: TokenCounter | None = getattr(self, "_token_counter", None)
                if counter is None:  # made on first use: it renders a few chats
                    counter = self._token_counter = TokenCounter(self.tokenizer)
                n, exact = counter.example(ex, max_tokens)
                if n > max_tokens:
                    raise DataError(
                        f"{label}[{i}] has {'' if exact else 'at least '}{n} tokens, "
                        f"more than the limit of {max_tokens}"
                    )
            full = tokenize_example(self.tokenizer, ex, sys.maxsize)
            if max_tokens is not None and len(full.input_ids) > max_tokens:
                raise DataError(
                    f"{label}[{i}] has {len(full.input_ids)} tokens, "
                    f"more than the limit of {max_tokens}"
                )
            tok = full.truncated(max_length)
            if tok.n_response_tokens == 0:
                raise DataError(
                    f"{label}[{i}] ({ex.id or 'no id'}): response truncated away at "
                    f"max_length={max_length}"
                )
            out.append(tok)
        return out

    def prepare(
        self,
        examples: Sequence[Example],
        config: SelectionConfig,
        max_tokens: int | None = None,
        search: SearchParams | None = None,
        *,
        avoid: Sequence[Example] = (),
        steering: Steering | None = None,
    ) -> TargetQuery:
        """A ``TargetQuery`` from examples and a config (tokenized and resolved once).

        Raises:
            DataError / ConfigError: see ``tokenize_targets`` and
                ``indexer.steered.resolve_selection`` (checkpoints, filter, budget and size
                problems).
        """
        steering = steering or Steering()
        resolved = resolve_selection(self.store, config, steering)
        return TargetQuery(
            targets=self.tokenize_targets(examples, max_tokens),
            subtasks=[ex.subtask or DEFAULT_SUBTASK for ex in examples],
            checkpoints=resolved.checkpoints,
            weights=resolved.weights,
            k=resolved.eligible.k,
            aggregate=config.aggregate,
            search=search or SearchParams(),
            avoid=self.tokenize_avoid(avoid, max_tokens),
            steering=steering,
            eligible=resolved.eligible,
            target_ids=[ex.id or None for ex in examples],
        )

    def tokenize_avoid(
        self, examples: Sequence[Example], max_tokens: int | None = None
    ) -> list[TokenizedExample]:
        """``tokenize_targets`` for avoid examples (none is fine); errors name ``avoid[i]``."""
        if not examples:
            return []
        return self.tokenize_targets(examples, max_tokens, label="avoid")

    def select_request(self, request: SelectRequest, max_tokens: int | None = None) -> Selection:
        """One selection for a wire request (the CLIs' path; the service batches instead)."""
        query = self.prepare(
            examples_from_targets(request.targets),
            selection_config(request),
            max_tokens,
            search_params(request),
            avoid=examples_from_targets(request.avoid or []),
            steering=steering_of(request),
        )
        return self.select_many([query])[0]

    def target_features(
        self,
        groups: Sequence[Sequence[TokenizedExample]],
        checkpoints: Sequence[str],
        *,
        uses: Sequence[Collection[str]] | None = None,
        failures: dict[int, Exception] | None = None,
    ) -> list[list[torch.Tensor]]:
        """SGD features of each group of targets at each checkpoint.

        Each group (one request's targets) is batched on its own, so its features do not
        depend on which other requests share the call: padding and batch shape change float
        rounding, and a request must get the same answer alone or batched.

        Args:
            groups: per request, its tokenized targets.
            checkpoints: checkpoint names, one adapter swap each.
            uses: per group, the checkpoints it needs (default: all); at the others its rows
                are zeros, which is what its weight 0 makes of them anyway.
            failures: given, a group whose features fail (any error: a NaN loss, out of memory,
                an adapter that cannot be swapped in) is recorded here by its index, gets an
                empty list and is skipped from then on, while the other groups go on; without
                it the first error is raised.

        Returns:
            Per group, per checkpoint: (T_group, P) unit rows in the group's input order.

        Raises:
            DataError: a target whose loss or gradient is not finite (named by its index).
            IntegrityError: an adapter that cannot be swapped in.
        """
        featurizer = Featurizer(self.grads, self.projector)
        out: list[list[torch.Tensor]] = [[] for _ in groups]
        failed: dict[int, Exception] = {}
        for name in checkpoints:
            active = {
                g
                for g in range(len(groups))
                if g not in failed and (uses is None or name in uses[g])
            }
            if active:
                try:
                    self._swap(name)  # one swap per checkpoint
                except Exception as exc:
                    if failures is None:
                        raise
                    _release_memory(exc)
                    failed.update((g, exc) for g in active)
            for g, targets in enumerate(groups):
                if g in failed:
                    continue
                if g not in active:
                    out[g].append(torch.zeros(len(targets), self.projector.dim))
                    continue
                try:
                    out[g].append(self._group_features(featurizer, targets, name))
                except Exception as exc:
                    if failures is None:
                        raise
                    _release_memory(exc)
                    failed[g] = exc
        for g in failed:
            out[g] = []
        if failures is not None:
            failures.update(failed)
        return out

    def _group_features(
        self, featurizer: Featurizer, targets: Sequence[TokenizedExample], checkpoint: str
    ) -> torch.Tensor:
        """(T, P) features of one request's targets at the swapped-in checkpoint."""
        # Length-sorted batches waste less padding; rows go back to input order.
        order = sorted(range(len(targets)), key=lambda i: len(targets[i].input_ids))
        feats = torch.empty(len(targets), self.projector.dim)
        for b in range(0, len(order), self.batch_size):
            rows = order[b : b + self.batch_size]
            batch = collate([targets[i] for i in rows], self.tokenizer.pad_token_id).to(self.device)
            try:
                rows_feats, losses = featurizer(batch)
            except ConfigError as exc:  # PerExampleGradients refuses a NaN loss
                raise DataError(
                    f"{_targets_named(rows)}: the loss is NaN at {checkpoint}, so no gradient "
                    "can be computed"
                ) from exc
            finite = torch.isfinite(losses) & torch.isfinite(rows_feats).all(dim=1)
            if not bool(finite.all()):
                bad = [rows[i] for i in (~finite).nonzero().flatten().tolist()]
                raise DataError(
                    f"{_targets_named(bad)}: the loss or gradient is not finite at {checkpoint}"
                )
            feats[rows] = rows_feats.cpu()
        return feats

    def select_many(
        self,
        queries: Sequence[TargetQuery],
        on_gradients: Callable[[], None] | None = None,
    ) -> list[Selection]:
        """Answer several queries with one adapter swap per checkpoint and one search pass.

        ``on_gradients`` is called once the target features are computed, before the search
        (progress reporting for jobs).

        Raises:
            The first failed query's error (``select_each`` answers the others).
        """

        def hook(_features: Sequence[Sequence[torch.Tensor] | None]) -> None:
            if on_gradients is not None:
                on_gradients()

        out = []
        for result in self.select_each(queries, hook):
            if isinstance(result, QueryFailure):
                raise result.error
            out.append(result)
        return out

    def select_each(
        self,
        queries: Sequence[TargetQuery],
        on_gradients: FeaturesHook | None = None,
    ) -> list[Selection | QueryFailure]:
        """Like ``select_many``, but each query gets its ``Selection`` or its ``QueryFailure``:
        one query's failure in any stage leaves the others' answers as they would be alone.

        Target features are computed per query inside its own failure boundary (the others'
        are kept, never recomputed); if the shared search pass fails, each query is searched
        alone over the same checkpoints; each answer is assembled on its own.
        ``on_gradients`` gets every query's features before the search (see ``FeaturesHook``).
        """
        t0 = time.perf_counter()
        names = self.store.checkpoint_names
        outcome: list[Selection | QueryFailure | None] = [None] * len(queries)
        feats: list[list[torch.Tensor] | None] = [None] * len(queries)
        todo = []
        for i, query in enumerate(queries):
            if query.features is None:
                todo.append(i)
            elif len(query.features) != len(query.checkpoints) or any(
                f.shape[0] != len(query.examples) for f in query.features
            ):
                error = ConfigError("given target features do not match the query's checkpoints")
                outcome[i] = QueryFailure(STAGE_GRADIENTS, error)
            else:
                feats[i] = list(query.features)
        if todo:
            wanted = {name for i in todo for name in queries[i].checkpoints}
            needed = [n for n in names if n in wanted]  # manifest order
            failures: dict[int, Exception] = {}
            try:
                computed = self.target_features(
                    [queries[i].examples for i in todo],
                    needed,
                    uses=[set(queries[i].checkpoints) for i in todo],
                    failures=failures,
                )
            except Exception as exc:  # outside any one group's boundary: all of them
                computed, failures = [[] for _ in todo], dict.fromkeys(range(len(todo)), exc)
            for j, i in enumerate(todo):
                if j in failures:
                    outcome[i] = QueryFailure(STAGE_GRADIENTS, failures[j])
                else:
                    by_name = dict(zip(needed, computed[j]))
                    feats[i] = [by_name[n] for n in queries[i].checkpoints]
        t1 = time.perf_counter()
        if on_gradients is not None:
            try:
                on_gradients(feats)
            except Exception:  # progress reporting must never fail a selection
                log.exception("on_gradients hook failed")

        live = [i for i, f in enumerate(feats) if f is not None and outcome[i] is None]
        # The search spans the checkpoints the answered queries use; others get weight 0.
        wanted = {name for i in live for name in queries[i].checkpoints}
        span = [n for n in names if n in wanted]
        plans: dict[int, SteeredPlan] = {}
        for i in live:
            try:
                plans[i] = self._plan(queries[i], feats[i] or [])
            except Exception as exc:
                outcome[i] = QueryFailure(STAGE_SEARCH, exc)
        found = self._search(span, queries, plans, outcome)
        share = 1.0 / max(1, len(found))
        for i, results in found.items():
            query, plan = queries[i], plans[i]
            try:
                walk, best = plan.walk(results, self.store)
                # A ranking ran out before the walk was done (near-duplicates skipped): the
                # same walk over a deeper search, until it finishes or holds every row.
                while walk.needs_more and plan.deepen():
                    sets = plan.query_sets(span)
                    results = self.searcher.search(span, sets, [query.search] * len(sets))
                    walk, best = plan.walk(results, self.store)
            except Exception as exc:
                _release_memory(exc)
                outcome[i] = QueryFailure(STAGE_SEARCH, exc)
                continue
            try:
                steered = plan.result(
                    walk, best, self.store, list(query.target_ids), list(query.subtasks)
                )
                outcome[i] = Selection(
                    ids=[self._ids[r] for r in steered.rows],
                    rows=steered.rows,
                    scores=steered.scores,
                    subtasks=steered.subtasks,
                    n_candidates=plan.eligible.n_candidates,
                    gradient_ms=(t1 - t0) * 1000 * share,
                    search_ms=(time.perf_counter() - t1) * 1000 * share,
                    n_tokens=steered.n_tokens,
                    explanations=steered.explanations,
                )
            except Exception as exc:
                outcome[i] = QueryFailure(STAGE_RESULT, exc)
        return [
            r if r is not None else QueryFailure(STAGE_RESULT, RuntimeError("no answer"))
            for r in outcome
        ]

    def _plan(self, query: TargetQuery, features: Sequence[torch.Tensor]) -> SteeredPlan:
        """The query's search-and-walk plan (targets' and avoid examples' features split)."""
        eligible = query.eligible or Eligible(k=query.k, mask=None, n_candidates=self.n)
        return plan_query(
            features,
            len(query.targets),
            query.subtasks,
            query.checkpoints,
            query.weights,
            query.aggregate,
            query.steering,
            eligible,
            self.n,
        )

    def _search(
        self,
        span: Sequence[str],
        queries: Sequence[TargetQuery],
        plans: dict[int, SteeredPlan],
        outcome: list[Selection | QueryFailure | None],
    ) -> dict[int, list[SearchResult]]:
        """One search pass for all plans' rankings; if it fails, each query alone (its
        failure its own). Returns, per query, its rankings' results."""
        order = list(plans)
        if not order:
            return {}
        sets = {i: plans[i].query_sets(span) for i in order}
        try:
            flat = self.searcher.search(
                span,
                [qs for i in order for qs in sets[i]],
                [queries[i].search for i in order for _ in sets[i]],
            )
            found, at = {}, 0
            for i in order:
                found[i] = flat[at : at + len(sets[i])]
                at += len(sets[i])
            return found
        except Exception as exc:
            _release_memory(exc)
            if len(order) == 1:
                outcome[order[0]] = QueryFailure(STAGE_SEARCH, exc)
                return {}
            log.warning(
                "search of %d queries failed (%s); searching them one by one",
                len(order),
                type(exc).__name__,
            )
        found = {}
        for i in order:
            try:
                found[i] = self.searcher.search(span, sets[i], [queries[i].search] * len(sets[i]))
            except Exception as exc:
                _release_memory(exc)
                outcome[i] = QueryFailure(STAGE_SEARCH, exc)
        return found

    def select(
        self,
        examples: Sequence[Example],
        config: SelectionConfig,
        search: SearchParams | None = None,
    ) -> Selection:
        """One selection from examples (tokenized once) and a config."""
        return self.select_many([self.prepare(examples, config, search=search)])[0]
