"""Stored features against independent recomputation from the real warmup state."""

import json

import numpy as np
import torch

from indexer.checkpoints import discover_checkpoints
from indexer.datastore import Datastore
from indexer.model_io import load_adapter_weights, load_lora_model, load_tokenizer
from less_core.data import Example, tokenize_example
from less_core.lora_grads import lora_layout, lora_parameters
from less_core.projectors import make_projector
from tests.conftest import LORA, TOKENS


def test_checkpoints_and_lr_weights(warmup_dir):
    ckpts = discover_checkpoints(warmup_dir)
    assert [c.name for c in ckpts] == ["checkpoint-6", "checkpoint-12"]
    # eta_c is the mean of the lrs the trainer logged over the checkpoint's steps.
    log = json.loads((warmup_dir / "checkpoint-12" / "trainer_state.json").read_text())[
        "log_history"
    ]
    lrs = {h["step"]: h["learning_rate"] for h in log if "learning_rate" in h}
    assert ckpts[0].lr == np.mean([lrs[s] for s in range(1, 7)])
    assert ckpts[1].lr == np.mean([lrs[s] for s in range(7, 13)])
    assert ckpts[0].lr > ckpts[1].lr > 0


def test_adam_features_equal_hand_computed_formula(
    tiny_model_dir, pool_path, warmup_dir, datastore_root
):
    """Datastore row == normalize(Π · m'/sqrt(v'+eps)) from the real optimizer.pt, by hand."""
    store = Datastore.open(datastore_root)
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_lora_model(tiny_model_dir, LORA, torch.device("cpu"))
    params = lora_parameters(model)
    projector = make_projector(store.manifest.projector, lora_layout(model))
    rows = {ex_id: i for i, ex_id in enumerate(store.ids)}
    pool = [json.loads(line) for line in pool_path.read_text().splitlines()]
    for ckpt in discover_checkpoints(warmup_dir):
        load_adapter_weights(model, ckpt.path)
        raw = torch.load(ckpt.path / "optimizer.pt", weights_only=True)
        group = raw["param_groups"][0]
        b1, b2 = group["betas"]
        eps = group["eps"]
        assert (b1, b2, eps) == (0.9, 0.999, 1e-8)
        stored = store.features(ckpt.name)
        for row in pool[:3] + pool[-2:]:
            tok = tokenize_example(tokenizer, Example.from_dict(row), TOKENS.max_length)
            model.zero_grad()
            loss = model(
                input_ids=torch.tensor([tok.input_ids]), labels=torch.tensor([tok.labels])
            ).loss
            loss.backward()
            gammas = []
            for pid, p in enumerate(params):
                g = p.module.weight.grad.reshape(-1).double().numpy()
                m = raw["state"][pid]["exp_avg"].reshape(-1).double().numpy()
                v = raw["state"][pid]["exp_avg_sq"].reshape(-1).double().numpy()
                m2 = b1 * m + (1 - b1) * g
                v2 = b2 * v + (1 - b2) * g * g
                gammas.append(m2 / np.sqrt(v2 + eps))
            full = torch.tensor(np.concatenate(gammas), dtype=torch.float32)[None]
            expected = projector.project_flat(full)[0].double().numpy()
            expected /= np.linalg.norm(expected)
            got = np.asarray(stored[rows[row["id"]]], dtype=np.float64)
            np.testing.assert_allclose(got, expected, atol=2e-5)


def test_features_are_unit_norm_and_manifest_round_trips(datastore_root):
    store = Datastore.open(datastore_root)
    m = store.manifest
    assert m.n == len(store.ids) == 48 and m.n_skipped == 0
    assert m.lora == LORA
    assert m.projector.dim == 256 and m.projector.seed == 7
    assert abs(sum(c.weight for c in m.checkpoints) - 1) < 1e-12
    # The file round-trips through the typed model unchanged.
    from indexer.datastore import MANIFEST
    from indexer.manifest import Manifest

    raw = json.loads((store.path / MANIFEST).read_text())
    assert Manifest.load(store.path / MANIFEST).model_dump(mode="json") == raw
    for name in store.checkpoint_names:
        f = np.asarray(store.features(name), dtype=np.float64)
        assert f.shape == (48, 256)
        np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert store.verify_checksums() == []


def test_accelerate_layout_checkpoints_index_identically(
    tmp_path, tiny_model_dir, pool_path, warmup_dir, datastore_root
):
    """Checkpoints saved as accelerate does (optimizer.bin, no trainer log) give the same features;
    learning rates then come from the scheduler state and can be overridden."""
    import shutil

    from indexer.build import BuildRequest, build_datastore
    from tests.conftest import BUILD, PROJ

    copy = tmp_path / "accelerate"
    shutil.copytree(warmup_dir, copy)
    for ckpt in copy.glob("checkpoint-*"):
        (ckpt / "optimizer.pt").rename(ckpt / "optimizer.bin")
        (ckpt / "trainer_state.json").unlink()
    ckpts = discover_checkpoints(copy, lr_overrides={"checkpoint-12": 1e-3})
    assert [c.lr_source for c in ckpts] == ["scheduler _last_lr", "override"]
    assert ckpts[1].lr == 1e-3 and ckpts[0].optimizer_state_path.name == "optimizer.bin"
    out = build_datastore(
        BuildRequest(
            tiny_model_dir,
            pool_path,
            copy,
            tmp_path / "ds",
            "tiny-llama",
            projection=PROJ,
            build=BUILD,
            tokenization=TOKENS,
            lr_overrides={"checkpoint-12": 1e-3},
        )
    )
    ours, ref = Datastore.open(out.parent.parent), Datastore.open(datastore_root)
    for name in ref.checkpoint_names:
        np.testing.assert_array_equal(
            np.asarray(ours.features(name)), np.asarray(ref.features(name))
        )
    assert [c.lr for c in ours.manifest.checkpoints][1] == 1e-3
