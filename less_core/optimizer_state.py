"""Mapping an in-memory optimizer state dict onto the model's trainable parameters.

Pure functions: reading ``optimizer.pt`` / ``optimizer.bin`` from disk lives in
``indexer.optimizer_files``. The layouts accepted (all of them torch ``Optimizer.state_dict()``
or a re-keying of it):

* **Index-keyed** (HF Trainer ``optimizer.pt``, ``Accelerator.save_state``'s ``optimizer.bin``):
  ``state`` keyed by integer ids numbered through the param groups in order. When torch recorded
  ``param_names`` in the groups (optimizer built from ``named_parameters()``) the ids are mapped by
  name; otherwise by position onto the model's trainable parameters in ``named_parameters`` order,
  with every shape checked.
* **Name-keyed** (``FSDP.optim_state_dict``, ``FSDP.full_optim_state_dict``,
  ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict``): ``state`` keyed by
  fully-qualified parameter names and groups whose ``params`` are those names.
* **Flattened name-keyed** (``get_optimizer_state_dict(..., flatten_optimizer_state_dict=True)``):
  ``{"state.<fqn>.exp_avg": ..., "param_groups.<fqn>.betas": ...}``.

Names are matched to the model's names after removing what wrappers and PEFT add (see
:func:`canonical_parameter_name`), then, for names still unmatched, by a unique dot-boundary
suffix (a state saved from the inner model, the ``LoraModel`` or a DDP ``module.`` wrapper)
that must be unique among all the model's names.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from less_core.errors import IndexMismatchError

# Module names that torch wrappers insert into parameter names (FSDP1, activation
# checkpointing, torch.compile); torch's own FQN helpers drop the same ones.
WRAPPER_SEGMENTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})
# PEFT keeps one sub-module per adapter under these: ``lora_A.<adapter>.weight``.
LORA_CONTAINERS = frozenset({"lora_A", "lora_B"})
PEFT_PREFIX = "base_model.model."
# How many names an error message lists.
_SHOW = 3


@dataclass(frozen=True)
class AdamState:
    """Adam moments per parameter name, with the optimizer's hyper-parameters.

    Attributes:
        exp_avg: name -> first moment m, flattened (d_m,) float32.
        exp_avg_sq: name -> second moment v, flattened (d_m,) float32.
        betas: (β1, β2) of the optimizer.
        eps: its epsilon.
        step: the optimizer step count, if recorded.
    """

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    betas: tuple[float, float]
    eps: float
    step: int | None

    def moments(self, names: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(m, v) for each name, in the given order.

        Raises:
            IndexMismatchError: a name has no moments.
        """
        missing = [n for n in names if n not in self.exp_avg]
        if missing:
            raise IndexMismatchError(
                f"optimizer state has no moments for {len(missing)} parameter(s), "
                f"e.g. {missing[:_SHOW]}"
            )
        return [(self.exp_avg[n], self.exp_avg_sq[n]) for n in names]


def canonical_parameter_name(name: str) -> str:
    """The part of a parameter name that does not depend on wrappers or the PEFT adapter name.

    Drops wrapper segments (``_fsdp_wrapped_module``, ``_checkpoint_wrapped_module``,
    ``_orig_mod``), the adapter segment after ``lora_A``/``lora_B`` (``lora_A.default.weight`` ->
    ``lora_A.weight``, as ``adapter_model.safetensors`` spells it) and a leading
    ``base_model.model.`` (``PeftModel`` -> the wrapped model's own names).

    Args:
        name: a fully-qualified parameter name.

    Returns:
        The canonical name.
    """
    parts = [p for p in name.split(".") if p not in WRAPPER_SEGMENTS]
    out: list[str] = []
    i = 0
    while i < len(parts):
        out.append(parts[i])
        # lora_A.<adapter>.weight: the adapter segment sits between the container and the leaf.
        if parts[i] in LORA_CONTAINERS and i + 2 == len(parts) - 1:
            i += 2
            continue
        i += 1
    canon = ".".join(out)
    return canon.removeprefix(PEFT_PREFIX)


def _dot_suffixes(name: str) -> list[str]:
    """``a.b.c`` -> ``["a.b.c", "b.c", "c"]``."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _preview(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:_SHOW])
    return shown + (", ..." if len(names) > _SHOW else "")


def match_parameter_names(recorded: Sequence[str], model_names: Sequence[str]) -> list[str]:
    """Map names recorded in an optimizer state one-to-one onto the model's parameter names.

    A recorded name matches the model name with the same :func:`canonical_parameter_name`. A name
    without such a twin matches the model name whose canonical name ends with its own at a dot
    boundary, or the other way round (a state saved from the inner model, from PEFT's
    ``LoraModel`` as ``model.model.…``, or through a DDP ``module.`` wrapper), provided exactly
    one of all the model's names does.

    Args:
        recorded: parameter names as the optimizer state spells them.
        model_names: the model's trainable parameter names.

    Returns:
        For each recorded name, the model name it stands for.

    Raises:
        IndexMismatchError: two names of one side collapse onto one canonical name, a name
            matches several model names, two names match the same one, or the sets differ (the
            message counts and lists the missing / unexpected names).
    """
    for side, names in (("optimizer state", recorded), ("model", model_names)):
        seen: dict[str, str] = {}
        for n in names:
            c = canonical_parameter_name(n)
            if c in seen:
                raise IndexMismatchError(
                    f"{side} parameter names {seen[c]!r} and {n!r} are the same parameter once "
                    "wrapper and adapter segments are removed: cannot match them unambiguously "
                    "(more than one LoRA adapter?)"
                )
            seen[c] = n
    model_by_canon = {canonical_parameter_name(n): n for n in model_names}
    suffix_of: dict[str, list[str]] | None = None  # built only when some name needs it
    mapped: list[str | None] = []
    for n in recorded:
        c = canonical_parameter_name(n)
        if c in model_by_canon:
            mapped.append(model_by_canon[c])
            continue
        if suffix_of is None:
            suffix_of = defaultdict(list)
            for mc in model_by_canon:
                for s in _dot_suffixes(mc)[1:]:
                    suffix_of[s].append(mc)
        # The recorded name is a suffix of model names, or model names are suffixes of it.
        hits = set(suffix_of.get(c, [])) | {s for s in _dot_suffixes(c)[1:] if s in model_by_canon}
        if len(hits) > 1:
            raise IndexMismatchError(
                f"optimizer state parameter {n!r} matches {len(hits)} model parameters "
                f"({_preview(sorted(model_by_canon[h] for h in hits))})"
            )
        mapped.append(model_by_canon[hits.pop()] if hits else None)

    claimed_by: dict[str, list[str]] = defaultdict(list)
    for n, target in zip(recorded, mapped):
        if target is not None:
            claimed_by[target].append(n)
    for target, rs in claimed_by.items():
        if len(rs) > 1:
            raise IndexMismatchError(
                f"optimizer state parameters {_preview(rs)} all match model parameter {target!r}"
            )
    missing = [n for n in model_names if n not in claimed_by]
    unexpected = [n for n, target in zip(recorded, mapped) if target is None]
    if missing or unexpected:
        raise IndexMismatchError(
            f"optimizer state names {len(recorded)} parameters, the model has "
            f"{len(model_names)} trainable; {len(missing)} model parameter(s) have no state"
            + (f" ({_preview(missing)})" if missing else "")
            + f", {len(unexpected)} state parameter(s) are not in the model"
            + (f" ({_preview(unexpected)})" if unexpected else "")
        )
    return [t for t in mapped if t is not None]


def _unflatten(state_dict: Mapping[Any, Any]) -> tuple[Any, Any]:
    """``state`` and ``param_groups`` of a normal or a DCP-flattened optimizer state dict
    (unchecked: the caller validates their types)."""
    if "state" in state_dict or "param_groups" in state_dict:
        return state_dict.get("state"), state_dict.get("param_groups")
    if not any(isinstance(k, str) and k.startswith("state.") for k in state_dict):
        raise IndexMismatchError(
            "not an optimizer state_dict: no 'state'/'param_groups' (keys: "
            f"{_preview([str(k) for k in state_dict])})"
        )
    # get_optimizer_state_dict(flatten_optimizer_state_dict=True): "state.<fqn>.<key>" and
    # "param_groups.<fqn>.<key>", one group entry per parameter. Adam's keys have no dots.
    state: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, Any]] = {}
    for key, value in state_dict.items():
        section, _, rest = str(key).partition(".")
        fqn, _, leaf = rest.rpartition(".")
        if section == "state":
            state.setdefault(fqn, {})[leaf] = value
        elif section == "param_groups":
            groups.setdefault(fqn, {})[leaf] = value
    fqns = list(dict.fromkeys([*state, *groups]))
    return state, [{**groups.get(f, {}), "params": [f]} for f in fqns]


def _hyper_parameters(groups: Sequence[Mapping[str, Any]]) -> tuple[tuple[float, float], float]:
    """(betas, eps) shared by all param groups (groups without parameters do not count)."""
    found = {
        (tuple(float(b) for b in g.get("betas", (0.9, 0.999))), float(g.get("eps", 1e-8)))
        for g in groups
        if g.get("params")
    }
    if len(found) > 1:
        raise IndexMismatchError(
            f"optimizer param groups use different Adam betas/eps {sorted(found)}: one virtual "
            "Adam step needs a single (betas, eps)"
        )
    if not found:
        raise IndexMismatchError("optimizer state has no parameters in its param_groups")
    ((betas, eps),) = found
    return (betas[0], betas[1]), eps


def adam_state_from_state_dict(
    state_dict: Mapping[Any, Any], param_names: Sequence[str], param_shapes: Sequence[torch.Size]
) -> AdamState:
    """Map an optimizer ``state_dict`` onto the model's trainable parameters.

    Accepts the index-keyed, name-keyed and flattened layouts described in the module docstring.
    Moments are cast to float32 (bf16/fp16 optimizer states included): the virtual Adam step is
    computed in float32 whatever the optimizer stored.

    Args:
        state_dict: ``{"state": {id_or_name: {"exp_avg", "exp_avg_sq", "step"}},
            "param_groups": [{"params": [...], "betas", "eps", ...}]}``, or its flattened form.
        param_names: the model's trainable parameter names in ``named_parameters`` order.
        param_shapes: their shapes.

    Returns:
        The moments keyed by the model's names, each flattened to (numel,) float32, with the
        groups' betas and eps and the largest recorded step.

    Raises:
        IndexMismatchError: not an optimizer state; names, counts or shapes do not line up (the
            message says which); a parameter has no Adam moments; groups disagree on betas/eps.
    """
    if not isinstance(state_dict, Mapping):
        raise IndexMismatchError(f"not an optimizer state_dict: a {type(state_dict).__name__}")
    state, groups = _unflatten(state_dict)
    if not isinstance(groups, list) or not isinstance(state, Mapping) or not groups:
        raise IndexMismatchError("not an optimizer state_dict (no 'state'/'param_groups')")
    if len(param_names) != len(param_shapes):
        raise ValueError("param_names and param_shapes differ in length")
    keys = [k for g in groups for k in g.get("params", [])]
    betas, eps = _hyper_parameters(groups)

    if all(isinstance(k, str) for k in keys):
        # FSDP / DCP: the keys are the names.
        targets = match_parameter_names(keys, param_names)
        how = "by name"
    elif all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        if all("param_names" in g for g in groups):
            targets = match_parameter_names(
                [n for g in groups for n in g["param_names"]], param_names
            )
            how = "by recorded param_names"
        else:
            if len(keys) != len(param_names):
                raise IndexMismatchError(
                    f"optimizer state covers {len(keys)} parameters, the model has "
                    f"{len(param_names)} trainable (ids without param_names are matched by "
                    "position; an FSDP flat-parameter state must be saved with "
                    "FSDP.optim_state_dict)"
                )
            targets = list(param_names)
            how = "by position (no param_names recorded)"
    else:
        kinds = sorted({type(k).__name__ for k in keys})
        raise IndexMismatchError(f"optimizer param_groups mix parameter key types {kinds}")

    shape_of = dict(zip(param_names, param_shapes))
    exp_avg: dict[str, torch.Tensor] = {}
    exp_avg_sq: dict[str, torch.Tensor] = {}
    steps: set[int] = set()
    for key, name in zip(keys, targets):
        entry = state.get(key)
        label = f"parameter {name!r}" + (f" (id {key})" if isinstance(key, int) else "")
        if not isinstance(entry, Mapping) or "exp_avg" not in entry or "exp_avg_sq" not in entry:
            has = sorted(entry) if isinstance(entry, Mapping) else []
            raise IndexMismatchError(
                f"no Adam moments for {label}: its state has keys {has} (not an Adam/AdamW "
                "state, or the optimizer never stepped)"
            )
        for moment in ("exp_avg", "exp_avg_sq"):
            t = entry[moment]
            if not isinstance(t, torch.Tensor) or t.shape != shape_of[name]:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise IndexMismatchError(
                    f"{label}: optimizer {moment} shape {got} != parameter shape "
                    f"{tuple(shape_of[name])} (matched {how})"
                )
        exp_avg[name] = entry["exp_avg"].reshape(-1).to(torch.float32)
        exp_avg_sq[name] = entry["exp_avg_sq"].reshape(-1).to(torch.float32)
        if "step" in entry:
            steps.add(int(torch.as_tensor(entry["step"]).item()))
    return AdamState(exp_avg, exp_avg_sq, betas, eps, max(steps, default=None))
