"""Every optimizer-state layout LESS users hit, written by the real library, mapped onto the model.

The model is the tiny random Llama with LoRA on q_proj/v_proj (8 trainable LoRA weights; lora_A
of q and v share a shape, lora_B do not). Every run starts from the same seed and steps AdamW
three times on the same batches; on CPU that is bitwise deterministic, so each layout's mapped
moments are checked exactly against (a) its own run's live ``optimizer.state`` and (b) the
reference layout, and the Adam features computed from them against the reference's features.

The reference is HF Trainer's optimizer.pt: the optimizer ``Trainer.create_optimizer()`` builds
(decay / no-decay groups, integer ids, no ``param_names``), saved as Trainer saves it
(``torch.save(optimizer.state_dict(), "optimizer.pt")``). accelerate's optimizer.bin comes from
``Accelerator.save_state``; the FSDP layouts from real FSDP1 / FSDP2 on a single-process gloo
group on CPU. Replicas (renamed keys of a real state) only where no installed library writes the
form: PEFT names without the adapter segment (as ``adapter_model.safetensors`` spells them) and
names carrying DDP / torch.compile / activation-checkpoint wrapper segments.
"""

from __future__ import annotations

import copy
import re
import tempfile
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist

from indexer.optimizer_files import (
    OPTIMIZER_STATE_FILES,
    find_optimizer_state_file,
    load_adam_state,
)
from less_core.adam import adam_normalize
from less_core.data import TokenizedExample, collate
from less_core.errors import IndexMismatchError
from less_core.featurize import Featurizer
from less_core.lora import attach_lora
from less_core.lora_grads import PerExampleGradients
from less_core.optimizer_state import (
    AdamState,
    adam_state_from_state_dict,
    canonical_parameter_name,
    match_parameter_names,
)
from less_core.projectors import make_projector
from tests.conftest import LORA, PROJ
from tests.core.test_adam import _module, _train, _trainable
from tests.tiny_llm import tiny_llama

VOCAB = 64
LR = 1e-2
STEPS = 3


def _lora_model() -> torch.nn.Module:
    return attach_lora(tiny_llama(VOCAB, seed=0), LORA)


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (2, 8), generator=g) for _ in range(STEPS)]


def _train_lm(model, opt, backward=None) -> None:
    for x in _batches():
        opt.zero_grad()
        loss = model(input_ids=x, labels=x).loss
        (backward or torch.Tensor.backward)(loss)
        opt.step()


def _trainable_params(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _adamw(params) -> torch.optim.AdamW:
    # What Trainer builds for optim="adamw_torch", weight_decay=0 (our warmup's settings).
    return torch.optim.AdamW(params, lr=LR, weight_decay=0.0)


def _live(model, opt) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(m, v) of the running optimizer, in the model's named_parameters order, as full tensors."""

    def full(t: torch.Tensor) -> torch.Tensor:
        return t.full_tensor() if hasattr(t, "full_tensor") else t  # FSDP2 DTensor

    out = []
    for _, p in model.named_parameters():
        if p.requires_grad:
            st = opt.state[p]
            out.append((full(st["exp_avg"]), full(st["exp_avg_sq"])))
    return out


@pytest.fixture(scope="module")
def target():
    """The names/shapes the indexer maps onto (a fresh PeftModel, as build_datastore loads it),
    and a probe that computes Adam features for a fixed batch."""
    model = _lora_model()
    grads = PerExampleGradients(model)
    names = list(grads.layout.names)
    shapes = [p.module.weight.shape for p in grads.params]
    projector = make_projector(PROJ, grads.layout)
    g = torch.Generator().manual_seed(5)
    batch = collate(
        [
            TokenizedExample(ids, ids)
            for ids in torch.randint(0, VOCAB, (3, 7), generator=g).tolist()
        ],
        pad_token_id=0,
    )

    def features(state: AdamState) -> torch.Tensor:
        return Featurizer(grads, projector, state)(batch)[0]

    return names, shapes, features


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState

    # Accelerator state is a process-wide singleton: leave none behind for other tests' Trainers.
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, target):
    """HF Trainer's optimizer.pt and the AdamState read from it."""
    from transformers import Trainer, TrainingArguments

    names, shapes, features = target
    out = tmp_path_factory.mktemp("trainer")
    model = _lora_model()
    _reset_accelerate()
    try:
        args = TrainingArguments(
            output_dir=str(out),
            learning_rate=LR,
            weight_decay=0.0,
            optim="adamw_torch",
            use_cpu=True,
            report_to="none",
        )
        opt = Trainer(model=model, args=args).create_optimizer()
    finally:
        _reset_accelerate()
    _train_lm(model, opt)
    ckpt = out / "checkpoint-3"
    ckpt.mkdir()
    torch.save(opt.state_dict(), ckpt / "optimizer.pt")  # Trainer._save_optimizer_and_scheduler
    path = find_optimizer_state_file(ckpt)
    assert path == ckpt / "optimizer.pt"
    state = load_adam_state(path, names, shapes)
    raw = torch.load(path, weights_only=True)
    return {
        "state": state,
        "live": _live(model, opt),
        "raw": raw,
        "features": features(state),
    }


def _check(state: AdamState, reference: dict, target, live=None) -> None:
    """Exactly the reference's moments, hyper-parameters and Adam features (and the run's own)."""
    names, _, features = target
    ref: AdamState = reference["state"]
    assert list(state.exp_avg) == list(state.exp_avg_sq)
    assert sorted(state.exp_avg) == sorted(names)
    for (m, v), (rm, rv) in zip(state.moments(names), ref.moments(names)):
        assert m.dtype == v.dtype == torch.float32
        assert torch.equal(m, rm) and torch.equal(v, rv)
    assert (state.betas, state.eps, state.step) == (ref.betas, ref.eps, ref.step)
    for (m, v), (lm, lv) in zip(state.moments(names), live or reference["live"]):
        assert torch.equal(m, lm.reshape(-1).float()) and torch.equal(v, lv.reshape(-1).float())
    assert torch.equal(features(state), reference["features"])


# --------------------------------------------------------------------------------------------
# 1. HF Trainer optimizer.pt (integer ids, with and without param_names)
# --------------------------------------------------------------------------------------------
def test_trainer_optimizer_pt(reference, target):
    raw = reference["raw"]
    # Trainer's layout: a decay group holding every LoRA weight and an empty no-decay group.
    assert [len(g["params"]) for g in raw["param_groups"]] == [8, 0]
    assert all(isinstance(k, int) for k in raw["state"])
    assert not any("param_names" in g for g in raw["param_groups"])
    state = reference["state"]
    assert state.betas == (0.9, 0.999) and state.eps == 1e-8 and state.step == STEPS
    _check(state, reference, target)


@pytest.mark.parametrize("root", ["peft", "inner"])
def test_optimizer_built_from_named_parameters_records_param_names(
    root, reference, target, tmp_path
):
    """Newer torch records ``param_names`` when given named parameters: ids map by name, also
    when they were taken from the wrapped model (no ``base_model.model.`` prefix)."""
    model = _lora_model()
    named_root = model if root == "peft" else model.base_model.model
    opt = _adamw([(n, p) for n, p in named_root.named_parameters() if p.requires_grad])
    _train_lm(model, opt)
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    raw = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    recorded = raw["param_groups"][0]["param_names"]
    assert recorded[0].startswith("base_model.model." if root == "peft" else "model.layers.")
    names, shapes, _ = target
    _check(load_adam_state(tmp_path / "optimizer.pt", names, shapes), reference, target)


# --------------------------------------------------------------------------------------------
# 2. accelerate optimizer.bin
# --------------------------------------------------------------------------------------------
def test_accelerate_save_state_optimizer_bin(reference, target, tmp_path):
    from accelerate import Accelerator

    _reset_accelerate()
    try:
        accelerator = Accelerator(cpu=True)
        model = _lora_model()
        opt = _adamw(_trainable_params(model))
        wrapped, wrapped_opt = accelerator.prepare(model, opt)
        _train_lm(wrapped, wrapped_opt, accelerator.backward)
        accelerator.save_state(str(tmp_path))
    finally:
        _reset_accelerate()
    path = find_optimizer_state_file(tmp_path)
    assert path == tmp_path / "optimizer.bin"
    names, shapes, _ = target
    _check(load_adam_state(path, names, shapes), reference, target, _live(model, opt))


# --------------------------------------------------------------------------------------------
# 3. FSDP / torch.distributed.checkpoint name-keyed layouts (real, single-process gloo on CPU)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def gloo_group():
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    with tempfile.TemporaryDirectory() as d:
        dist.init_process_group("gloo", store=dist.FileStore(f"{d}/store", 1), rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def _name_keyed(sd: dict) -> None:
    assert all(isinstance(k, str) for k in sd["state"])
    assert all(isinstance(k, str) for g in sd["param_groups"] for k in g["params"])


@pytest.mark.parametrize("api", ["optim_state_dict", "full_optim_state_dict"])
def test_fsdp1_optim_state_dict(api, gloo_group, reference, target, tmp_path):
    """``FSDP.optim_state_dict`` is what accelerate (and Trainer under FSDP) saves as
    optimizer.bin with a FULL_STATE_DICT policy; ``full_optim_state_dict`` is its older form."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FSDP1's deprecation warnings
        model = FSDP(_lora_model(), use_orig_params=True, device_id=torch.device("cpu"))
        opt = _adamw(_trainable_params(model))
        _train_lm(model, opt)
        sd = getattr(FSDP, api)(model, opt)
    _name_keyed(sd)
    assert any("_fsdp_wrapped_module" in n for n, _ in model.named_parameters())
    assert not any("_fsdp_wrapped_module" in k for k in sd["state"])
    torch.save(sd, tmp_path / "optimizer.bin")
    names, shapes, _ = target
    state = load_adam_state(tmp_path / "optimizer.bin", names, shapes)
    _check(state, reference, target, _live(model, opt))


@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
def test_fsdp2_get_optimizer_state_dict(flatten, gloo_group, reference, target, tmp_path):
    """FSDP2 (``fully_shard``) + ``get_optimizer_state_dict``; ``flatten_optimizer_state_dict``
    is torchtitan's ``{"state.<fqn>.exp_avg": ...}`` form."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard

    model = _lora_model()
    fully_shard(model)
    opt = _adamw(_trainable_params(model))
    _train_lm(model, opt)
    options = StateDictOptions(
        full_state_dict=True, cpu_offload=True, flatten_optimizer_state_dict=flatten
    )
    sd = get_optimizer_state_dict(model, opt, options=options)
    if flatten:
        assert "state" not in sd and any(k.startswith("state.") for k in sd)
    else:
        _name_keyed(sd)
        assert type(next(iter(sd["state"].values()))["exp_avg"]) is torch.Tensor
    torch.save(sd, tmp_path / "optimizer.bin")
    names, shapes, _ = target
    state = load_adam_state(tmp_path / "optimizer.bin", names, shapes)
    _check(state, reference, target, _live(model, opt))


# --------------------------------------------------------------------------------------------
# 4. PEFT names: with/without the adapter segment and the base_model.model. prefix
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain_run():
    model = _lora_model()
    opt = _adamw(_trainable_params(model))
    _train_lm(model, opt)
    return model, opt


def _drop_adapter(name: str) -> str:
    # As adapter_model.safetensors / get_peft_model_state_dict spell it.
    return name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def _rename(sd: dict, fn) -> dict:
    return {
        "state": {fn(k): v for k, v in sd["state"].items()},
        "param_groups": [{**g, "params": [fn(k) for k in g["params"]]} for g in sd["param_groups"]],
    }


ROOTS = {
    "PeftModel": (lambda m: m, "base_model.model.model.layers.0."),
    "LoraModel": (lambda m: m.base_model, "model.model.layers.0."),
    "inner model": (lambda m: m.base_model.model, "model.layers.0."),
}


@pytest.mark.parametrize("adapter_segment", [True, False], ids=["default", "no-adapter"])
@pytest.mark.parametrize("root", list(ROOTS))
def test_peft_name_variants(root, adapter_segment, plain_run, reference, target):
    """Name-keyed states from ``get_optimizer_state_dict`` over each module of the PEFT wrapper
    stack (real), each also with ``.default`` removed (replica), map onto the PeftModel's names."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model, opt = plain_run
    get_root, prefix = ROOTS[root]
    sd = get_optimizer_state_dict(get_root(model), opt)
    first = next(iter(sd["state"]))
    assert first == prefix + "self_attn.q_proj.lora_A.default.weight"
    if not adapter_segment:
        sd = _rename(sd, _drop_adapter)
    names, shapes, _ = target
    _check(adam_state_from_state_dict(sd, names, shapes), reference, target, _live(model, opt))


def test_wrapper_prefixes_and_segments(plain_run, reference, target):
    """DDP's ``module.`` prefix and FSDP1 / compile segments inside names (replicas: a state
    saved with the wrapped model's own parameter names)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model, opt = plain_run
    sd = get_optimizer_state_dict(model, opt)
    names, shapes, _ = target
    for fn in (
        lambda k: "module." + k,
        lambda k: (
            "_orig_mod._fsdp_wrapped_module."
            + re.sub(r"(\.layers\.\d+)\.", r"\1._checkpoint_wrapped_module.", k)
        ),
    ):
        _check(adam_state_from_state_dict(_rename(sd, fn), names, shapes), reference, target)


def test_canonical_names():
    full = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    short = "model.layers.0.self_attn.q_proj.lora_A.weight"
    assert canonical_parameter_name(full) == short
    assert canonical_parameter_name(short) == short
    assert canonical_parameter_name("base_model.model." + short) == short
    assert canonical_parameter_name(full.replace("default", "my_task")) == short
    assert canonical_parameter_name("_fsdp_wrapped_module." + full) == short
    # Only the segment between lora_A/lora_B and the leaf is an adapter name.
    assert canonical_parameter_name("lora_A.weight") == "lora_A.weight"
    assert canonical_parameter_name("0.weight") == "0.weight"
    # Suffix matching respects dot boundaries: layers.1 is not layers.11.
    model = ["m.layers.11.q.lora_A.default.weight", "m.layers.1.q.lora_A.default.weight"]
    assert match_parameter_names(
        ["layers.1.q.lora_A.weight", "layers.11.q.lora_A.weight"], model
    ) == [
        model[1],
        model[0],
    ]


def test_two_adapters_are_ambiguous():
    """With ``.default`` dropped two adapters' weights are one name: refuse, do not guess."""
    base = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.{}.weight"
    with pytest.raises(IndexMismatchError, match="unambiguously"):
        match_parameter_names([base.format("default")], [base.format("default"), base.format("b")])
    with pytest.raises(IndexMismatchError, match="unambiguously"):
        match_parameter_names([base.format("default"), base.format("b")], [base.format("default")])


# --------------------------------------------------------------------------------------------
# 5. index-keyed without param_names: by position, every shape checked
# --------------------------------------------------------------------------------------------
def test_positional_mapping_checks_every_shape(reference, target):
    names, shapes, _ = target
    sd = copy.deepcopy(reference["raw"])
    group = sd["param_groups"][0]
    # Swap q_proj.lora_B (32, 4) and v_proj.lora_B (16, 4) of layer 0: positions now lie.
    group["params"][1], group["params"][3] = group["params"][3], group["params"][1]
    with pytest.raises(IndexMismatchError, match=r"by position") as e:
        adam_state_from_state_dict(sd, names, shapes)
    msg = str(e.value)
    assert "q_proj.lora_B" in msg and "(16, 4)" in msg and "(32, 4)" in msg and "id 3" in msg
    # The same swap is harmless when the groups record names.
    named = copy.deepcopy(sd)
    order = [names[i] for i in named["param_groups"][0]["params"]]
    named["param_groups"][0]["param_names"] = order
    named["param_groups"][1]["param_names"] = []
    _check(adam_state_from_state_dict(named, names, shapes), reference, target)


# --------------------------------------------------------------------------------------------
# 6. bf16 / fp16 moments
# --------------------------------------------------------------------------------------------
# fp16 with eps=1e-8 underflows v and NaNs the moments: fp16 runs use an eps fp16 can hold.
@pytest.mark.parametrize("dtype,eps", [(torch.bfloat16, 1e-8), (torch.float16, 1e-4)])
def test_half_precision_moments_become_float32(dtype, eps, target, tmp_path):
    """A model trained in pure bf16/fp16 has moments of that dtype: mapped to float32 exactly."""
    model = _lora_model().to(dtype)
    opt = torch.optim.AdamW(_trainable_params(model), lr=1e-3, eps=eps, weight_decay=0.0)
    _train_lm(model, opt)
    live = _live(model, opt)
    assert live[0][0].dtype == dtype
    assert all(torch.isfinite(t).all() for mv in live for t in mv)
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    names, shapes, features = target
    state = load_adam_state(tmp_path / "optimizer.pt", names, shapes)
    for (m, v), (lm, lv) in zip(state.moments(names), live):
        assert m.dtype == v.dtype == torch.float32
        assert torch.equal(m, lm.reshape(-1).float()) and torch.equal(v, lv.reshape(-1).float())
    assert features(state).dtype == torch.float32


# --------------------------------------------------------------------------------------------
# 7. clear errors
# --------------------------------------------------------------------------------------------
def _named_sd(plain_run) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model, opt = plain_run
    return copy.deepcopy(get_optimizer_state_dict(model, opt))


def _drop(sd: dict, keys) -> dict:
    for k in keys:
        del sd["state"][k]
        sd["param_groups"][0]["params"].remove(k)
    return sd


def test_error_missing_names(plain_run, target):
    names, shapes, _ = target
    sd = _drop(_named_sd(plain_run), [names[2]])
    with pytest.raises(IndexMismatchError) as e:
        adam_state_from_state_dict(sd, names, shapes)
    msg = str(e.value)
    assert "names 7 parameters, the model has 8 trainable" in msg
    assert f"1 model parameter(s) have no state ('{names[2]}')" in msg
    assert "0 state parameter(s) are not in the model" in msg
    # Many missing: counts and the first few.
    sd = _drop(_named_sd(plain_run), names[:5])
    with pytest.raises(IndexMismatchError, match=r"5 model parameter\(s\) have no state") as e:
        adam_state_from_state_dict(sd, names, shapes)
    assert f"'{names[2]}', ..." in str(e.value) and names[3] not in str(e.value)


def test_error_unexpected_names(plain_run, target):
    names, shapes, _ = target
    sd = _named_sd(plain_run)
    bad = names[0].replace("q_proj", "k_proj")
    sd = _rename(sd, lambda k: bad if k == names[0] else k)
    with pytest.raises(IndexMismatchError) as e:
        adam_state_from_state_dict(sd, names, shapes)
    msg = str(e.value)
    assert f"1 model parameter(s) have no state ('{names[0]}')" in msg
    assert f"1 state parameter(s) are not in the model ('{bad}')" in msg


def test_error_name_keyed_shape(plain_run, target):
    names, shapes, _ = target
    sd = _named_sd(plain_run)
    sd["state"][names[1]]["exp_avg_sq"] = torch.zeros(16, 4)
    with pytest.raises(IndexMismatchError) as e:
        adam_state_from_state_dict(sd, names, shapes)
    assert str(e.value) == (
        f"parameter {names[1]!r}: optimizer exp_avg_sq shape (16, 4) != parameter shape (32, 4) "
        "(matched by name)"
    )


def test_error_suffix_ambiguity_and_double_claims(plain_run, target):
    names, shapes, _ = target
    sd = _named_sd(plain_run)
    short = "self_attn.q_proj.lora_A.weight"  # layer 0 or layer 1?
    sd = _rename(sd, lambda k: short if k == names[0] else k)
    with pytest.raises(IndexMismatchError, match=r"matches 2 model parameters"):
        adam_state_from_state_dict(sd, names, shapes)
    sd = _rename(_named_sd(plain_run), lambda k: "x." + k if k == names[0] else k)
    sd["state"]["y." + names[0]] = sd["state"]["x." + names[0]]
    sd["param_groups"][0]["params"].append("y." + names[0])
    with pytest.raises(IndexMismatchError, match=r"all match model parameter"):
        adam_state_from_state_dict(sd, names, shapes)


def test_error_counts_and_structure(reference, target):
    names, shapes, _ = target
    sd = copy.deepcopy(reference["raw"])
    sd["param_groups"][0]["params"].pop()
    with pytest.raises(IndexMismatchError, match=r"covers 7 parameters, the model has 8 trainable"):
        adam_state_from_state_dict(sd, names, shapes)
    with pytest.raises(IndexMismatchError, match=r"not an optimizer state_dict.*'model'"):
        adam_state_from_state_dict({"model": {}}, names, shapes)
    with pytest.raises(IndexMismatchError, match=r"not an optimizer state_dict: a list"):
        adam_state_from_state_dict([], names, shapes)  # type: ignore[arg-type]
    mixed = copy.deepcopy(reference["raw"])
    mixed["param_groups"][1]["params"] = [names[0]]
    with pytest.raises(IndexMismatchError, match=r"mix parameter key types \['int', 'str'\]"):
        adam_state_from_state_dict(mixed, names, shapes)


def test_error_no_moments_and_other_optimizers(reference, target):
    names, shapes, _ = target
    sd = copy.deepcopy(reference["raw"])
    del sd["state"][4]["exp_avg"]
    with pytest.raises(IndexMismatchError) as e:
        adam_state_from_state_dict(sd, names, shapes)
    assert str(e.value).startswith(
        f"no Adam moments for parameter {names[4]!r} (id 4): its state has keys "
        "['exp_avg_sq', 'step']"
    )
    # Different betas per group cannot be one virtual Adam step.
    sd = copy.deepcopy(reference["raw"])
    sd["param_groups"][1]["params"] = [sd["param_groups"][0]["params"].pop()]
    sd["param_groups"][1]["betas"] = (0.8, 0.99)
    with pytest.raises(IndexMismatchError, match=r"different Adam betas/eps"):
        adam_state_from_state_dict(sd, names, shapes)
    # An SGD state has no moments at all.
    model = _lora_model()
    sgd = torch.optim.SGD(_trainable_params(model), lr=LR, momentum=0.9)
    _train_lm(model, sgd)
    with pytest.raises(IndexMismatchError, match=r"its state has keys \['momentum_buffer'\]"):
        adam_state_from_state_dict(sgd.state_dict(), names, shapes)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def test_find_optimizer_state_file_order(tmp_path):
    assert OPTIMIZER_STATE_FILES == ("optimizer.pt", "optimizer.bin")
    assert find_optimizer_state_file(tmp_path) is None
    (tmp_path / "optimizer.bin").write_bytes(b"")
    assert find_optimizer_state_file(tmp_path) == tmp_path / "optimizer.bin"
    (tmp_path / "optimizer.pt").mkdir()  # a directory of that name is not the file
    assert find_optimizer_state_file(tmp_path) == tmp_path / "optimizer.bin"


def test_load_from_checkpoint_files_and_real_adam_feature(tmp_path):
    """optimizer.pt as Trainer writes it -> AdamState -> Γ equals the next real Adam update."""
    model = _module()
    names, shapes, params = _trainable(model)
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0, foreach=False)
    _train(model, opt, steps=4)
    assert find_optimizer_state_file(tmp_path) is None
    torch.save(opt.state_dict(), tmp_path / "optimizer.bin")
    assert find_optimizer_state_file(tmp_path) == tmp_path / "optimizer.bin"
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    path = find_optimizer_state_file(tmp_path)
    assert path == tmp_path / "optimizer.pt"
    state = load_adam_state(path, names, shapes)
    assert state.step == 4

    grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(9)) for p in params]
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    for (m, v), p, b, g in zip(state.moments(names), params, before, grads):
        gamma = adam_normalize(
            g.reshape(1, -1),
            m,
            v,
            state.betas,
            state.eps,
            eps_placement="outside",
            bias_correction_step=state.step,
        )
        np.testing.assert_allclose(
            (-1e-2 * gamma[0]).double().numpy(),
            (p.detach() - b).reshape(-1).double().numpy(),
            rtol=1e-4,
            atol=2e-8,  # float32 parameters: the update is read back with cancellation
        )
