"""Faults fail alone: one request's failure, in any stage and of any exception type, fails that
request only; its micro-batch neighbours get the answers they get alone; the worker lives on.
A broken datastore at start-up is "failed: <reason>" while the others serve."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

import indexer.query as query_module
import less_core.lora_grads as lora_grads
from indexer.datastore import Datastore, feature_file
from indexer.model_io import ADAPTER_WEIGHTS
from indexer.query import QueryEngine, Selection
from indexer.search import ShardSearcher
from less_core.config import SelectionConfig
from less_core.data import Example
from service.app import create_app
from service.settings import ServiceSettings, hash_key
from tests.service.conftest import KEYS, TARGETS, auth, make_settings, wait_ready

WINDOW_MS = 600  # wide: requests sent together from threads share one micro-batch
POISON_K = 7
POISON = {"prompt": "poison 1 = ", "completion": "9"}
GOOD = [
    {"targets": [TARGETS[0], TARGETS[1]], "k": 3},
    {"targets": [TARGETS[2]], "k": 5},
    {"targets": TARGETS, "k": 4, "aggregate": "mean"},
]
JOB_WAIT_S = 30


def examples(body: dict) -> list[Example]:
    return [Example.from_dict(t, require_id=False) for t in body["targets"]]


def alone(engine: QueryEngine, body: dict) -> Selection:
    config = SelectionConfig(
        k=body["k"],
        aggregate=body.get("aggregate", "max"),
        checkpoints=tuple(body["checkpoints"]) if "checkpoints" in body else None,
    )
    return engine.select(examples(body), config)


@pytest.fixture(scope="module")
def fault_client(datastore_root, tiny_model_dir, tmp_path_factory):
    settings = make_settings(
        datastore_root,
        tiny_model_dir,
        tmp_path_factory.mktemp("jobs"),
        batch_window_ms=WINDOW_MS,
        cache_size=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def poison_ids(reference_engine) -> tuple[int, ...]:
    (tok,) = reference_engine.tokenize_targets(examples({"targets": [POISON]}))
    return tuple(tok.input_ids)


def has_poison(batch, poison_ids) -> list[int]:
    """Rows of a collated batch that are the poisoned target."""
    rows = []
    for r, (ids, mask) in enumerate(zip(batch.input_ids.cpu(), batch.attention_mask.cpu())):
        if tuple(ids[mask.bool()].tolist()) == poison_ids:
            rows.append(r)
    return rows


def break_featurizer(monkeypatch, poison_ids, error: Exception) -> None:
    """The featurizer raises ``error`` for a batch holding the poisoned target only."""
    original = query_module.Featurizer

    class Failing(original):  # type: ignore[misc, valid-type]
        def __call__(self, batch):
            if has_poison(batch, poison_ids):
                raise error
            return super().__call__(batch)

    monkeypatch.setattr(query_module, "Featurizer", Failing)


def nan_loss(monkeypatch, poison_ids) -> None:
    """The poisoned target's loss is NaN (as a numerical blow-up would make it)."""
    original = lora_grads.response_losses

    def losses(model, batch):
        out = original(model, batch)
        rows = has_poison(batch, poison_ids)
        if rows:
            out = out.clone()
            out[rows] = float("nan")
        return out

    monkeypatch.setattr(lora_grads, "response_losses", losses)


def break_search(monkeypatch) -> None:
    original = ShardSearcher.search

    def search(self, checkpoints, query_sets, params):
        if any(qs.k == POISON_K for qs in query_sets):
            raise ZeroDivisionError("simulated search bug")
        return original(self, checkpoints, query_sets, params)

    monkeypatch.setattr(ShardSearcher, "search", search)


def break_result(monkeypatch) -> None:
    def selection(**fields):
        if len(fields["rows"]) == POISON_K:
            raise UnicodeError("simulated assembly bug")
        return Selection(**fields)

    monkeypatch.setattr(query_module, "Selection", selection)


def break_tokenizer(monkeypatch) -> None:
    original = QueryEngine.tokenize_targets

    def tokenize(self, exs, max_tokens=None):
        if any(ex.prompt == POISON["prompt"] for ex in exs):
            raise TypeError("simulated tokenizer crash")
        return original(self, exs, max_tokens)

    monkeypatch.setattr(QueryEngine, "tokenize_targets", tokenize)


def corrupt_adapter(client, checkpoint: str) -> None:
    """The engine's in-memory adapter of one checkpoint no longer fits the model."""
    engine = client.app.state.services.registry.engine("tiny")
    weights = dict(engine.adapters[checkpoint])
    key = next(iter(weights))
    weights[key] = torch.zeros(3, 3)
    engine.adapters[checkpoint] = weights
    return engine


# fault -> (status, error code, words of the message) of the poisoned request
CASES = {
    "tokenizer TypeError": (500, "internal", "tokenizing the targets (TypeError)"),
    "NaN loss": (400, "invalid_request", "targets[0]: the loss is NaN at checkpoint-"),
    "CUDA out of memory": (503, "overloaded", "out of memory while computing target gradients"),
    "RuntimeError out of memory": (503, "overloaded", "out of memory while computing target"),
    "unexpected featurizer error": (
        500,
        "internal",
        "internal error while computing target gradients (KeyError)",
    ),
    "search stage": (500, "internal", "internal error while searching the datastore"),
    "result assembly": (500, "internal", "internal error while assembling the result"),
    "corrupt adapter": (500, "internal", "adapter of checkpoint checkpoint-12 cannot be swapped"),
}


def post_together(client, bodies: list[dict]) -> list:
    barrier = threading.Barrier(len(bodies))
    out: list = [None] * len(bodies)

    def send(i: int) -> None:
        barrier.wait()
        out[i] = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return out


@pytest.mark.parametrize("fault", list(CASES))
def test_one_failing_request_fails_alone_in_its_micro_batch(
    fault, fault_client, reference_engine, poison_ids, monkeypatch
):
    status, code, words = CASES[fault]
    good = [dict(b) for b in GOOD]
    poisoned = {"targets": [POISON], "k": POISON_K}
    restore = None
    if fault == "corrupt adapter":
        # The poisoned request needs the broken checkpoint; its neighbours do not.
        poisoned["checkpoints"] = ["checkpoint-12"]
        for body in good:
            body["checkpoints"] = ["checkpoint-6"]
    expected = [alone(reference_engine, body) for body in good]

    if fault == "tokenizer TypeError":
        break_tokenizer(monkeypatch)
    elif fault == "NaN loss":
        nan_loss(monkeypatch, poison_ids)
    elif fault == "CUDA out of memory":
        break_featurizer(monkeypatch, poison_ids, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    elif fault == "RuntimeError out of memory":
        error = RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        break_featurizer(monkeypatch, poison_ids, error)
    elif fault == "unexpected featurizer error":
        break_featurizer(monkeypatch, poison_ids, KeyError("simulated"))
    elif fault == "search stage":
        break_search(monkeypatch)
    elif fault == "result assembly":
        break_result(monkeypatch)
    elif fault == "corrupt adapter":
        engine = fault_client.app.state.services.registry.engine("tiny")
        restore = dict(engine.adapters)
        corrupt_adapter(fault_client, "checkpoint-12")

    services = fault_client.app.state.services
    engine = services.registry.engine("tiny")
    sizes: list[int] = []
    select_each = engine.select_each

    def recording(queries, on_gradients=None):
        sizes.append(len(queries))
        return select_each(queries, on_gradients)

    monkeypatch.setattr(engine, "select_each", recording)
    feature_calls: list[int] = []
    target_features = QueryEngine.target_features

    def counting(self, groups, *args, **kwargs):
        feature_calls.append(len(groups))
        return target_features(self, groups, *args, **kwargs)

    monkeypatch.setattr(QueryEngine, "target_features", counting)
    try:
        bodies = good[:1] + [poisoned] + good[1:]
        responses = post_together(fault_client, bodies)
    finally:
        if restore is not None:
            engine.adapters = restore

    bad = responses[1]
    assert bad.status_code == status, bad.text
    error = bad.json()["error"]
    assert error["code"] == code and words in error["message"], error
    assert "Traceback" not in bad.text
    if status == 503:
        assert bad.headers["Retry-After"] == "1"
    # One engine call held the neighbours (and the poisoned one, unless it failed before).
    batched = len(GOOD) if fault == "tokenizer TypeError" else len(GOOD) + 1
    assert sizes == [batched], sizes
    # Nothing was computed twice: one gradient pass for the whole batch, failure or not.
    assert feature_calls == [batched], feature_calls
    for response, want in zip(responses[:1] + responses[2:], expected):
        assert response.status_code == 200, response.text
        got = response.json()["selected"]
        assert [s["id"] for s in got] == want.ids
        assert [s["score"] for s in got] == want.scores  # to the last bit: as if alone
    assert services.worker._thread.is_alive()
    monkeypatch.undo()
    again = fault_client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=poisoned)
    assert again.status_code == 200, again.text


def test_a_job_whose_gradients_fail_fails_with_the_reason(fault_client, poison_ids, monkeypatch):
    nan_loss(monkeypatch, poison_ids)
    created = fault_client.post(
        "/v1/datastores/tiny/jobs", headers=auth("alpha"), json={"targets": [POISON], "k": 3}
    )
    assert created.status_code == 202, created.text
    deadline = time.monotonic() + JOB_WAIT_S
    while True:
        job = fault_client.get(f"/v1/jobs/{created.json()['id']}", headers=auth("alpha")).json()
        if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "invalid_request"
    assert "the loss is NaN" in job["error"]["message"]


def test_an_error_escaping_the_engine_fails_only_its_requests(
    datastore_root, tiny_model_dir, tmp_path, caplog
):
    """Even an engine whose select_each itself raises: requests are retried one by one and
    each failure is its own JSON 500; the worker keeps answering."""
    from service.registry import default_engine_factory

    def broken_engine(store, config, device):
        engine = default_engine_factory(store, config, device)
        original = engine.select_each

        def flaky(queries, on_gradients=None):
            if any(q.k == POISON_K for q in queries):
                raise RuntimeError("simulated engine failure")
            return original(queries, on_gradients)

        engine.select_each = flaky
        return engine

    settings = make_settings(
        datastore_root, tiny_model_dir, tmp_path, batch_window_ms=WINDOW_MS, cache_size=0
    )
    app = create_app(settings, engine_factory=broken_engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        responses = post_together(client, [GOOD[0], {"targets": TARGETS, "k": POISON_K}])
        assert responses[0].status_code == 200, responses[0].text
        assert responses[1].status_code == 500
        message = responses[1].json()["error"]["message"]
        assert message == "internal error while computing target gradients (RuntimeError)"
        assert "simulated engine failure" not in responses[1].text
        assert "simulated engine failure" in caplog.text
        assert client.app.state.services.worker._thread.is_alive()


# --- broken datastores at start-up ---------------------------------------------------------


def _copy(datastore_root: Path, dest: Path) -> tuple[Path, Datastore]:
    shutil.copytree(datastore_root, dest)
    return dest, Datastore.open(dest)


def no_checkpoints(root: Path, store: Datastore) -> None:
    import json

    path = store.path / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["checkpoints"]
    path.write_text(json.dumps(manifest))


def no_current(root: Path, store: Datastore) -> None:
    (root / "CURRENT").unlink()


def truncated_features(root: Path, store: Datastore) -> None:
    path = store.path / "shards/00000" / feature_file(store.checkpoint_names[0])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage_adapter(root: Path, store: Datastore) -> None:
    path = store.path / "adapters" / store.checkpoint_names[-1] / ADAPTER_WEIGHTS
    path.write_bytes(b"\x00garbage" * 64)


def nan_adapter(root: Path, store: Datastore) -> None:
    path = store.path / "adapters" / store.checkpoint_names[-1] / ADAPTER_WEIGHTS
    weights = load_file(str(path))
    key = sorted(weights)[0]
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, str(path))


def missing_adapter_weight(root: Path, store: Datastore) -> None:
    path = store.path / "adapters" / store.checkpoint_names[-1] / ADAPTER_WEIGHTS
    weights = load_file(str(path))
    del weights[sorted(weights)[0]]
    save_file(weights, str(path))


BROKEN = {
    "no-checkpoints": (no_checkpoints, "checkpoints"),
    "no-current": (no_current, "missing CURRENT"),
    "truncated": (truncated_features, "feature file shards/00000/features/checkpoint-6.npy"),
    "garbage-adapter": (garbage_adapter, "adapter of checkpoint checkpoint-12 is unreadable"),
    "nan-adapter": (nan_adapter, "adapter of checkpoint checkpoint-12: "),
    "partial-adapter": (missing_adapter_weight, "does not match the model's LoRA layout"),
}


def test_broken_datastores_fail_alone_at_start_up(
    datastore_root, tiny_model_dir, tmp_path, reference_engine
):
    datastores = {"good": {"path": str(datastore_root), "model_dir": str(tiny_model_dir)}}
    for name, (breaks, _) in BROKEN.items():
        root, store = _copy(datastore_root, tmp_path / name)
        breaks(root, store)
        datastores[name] = {"path": str(root), "model_dir": str(tiny_model_dir)}
    team = {"key_sha256": [hash_key(KEYS["alpha"])], "datastores": list(datastores)}
    settings = ServiceSettings(
        datastores=datastores,
        teams={"alpha": team},
        jobs_dir=str(tmp_path / "jobs"),
        device="cpu",
        reload_interval_s=0,
    )
    with TestClient(create_app(settings)) as client:
        registry = client.app.state.services.registry
        assert registry.loaded.wait(120)
        states = registry.states()
        assert states["good"] == "ready", states
        for name, (_, words) in BROKEN.items():
            assert states[name].startswith("failed: "), (name, states[name])
            assert words in states[name], (name, states[name])

        listing = client.get("/v1/datastores", headers=auth("alpha"))
        assert listing.status_code == 200, listing.text
        listed = {d["name"] for d in listing.json()["datastores"]}
        assert "good" in listed and not listed & {"no-checkpoints", "no-current"}
        body = {"targets": TARGETS, "k": 5}
        answer = client.post("/v1/datastores/good/select", headers=auth("alpha"), json=body)
        assert answer.status_code == 200, answer.text
        want = alone(reference_engine, body)
        assert [s["id"] for s in answer.json()["selected"]] == want.ids
        for name in ("truncated", "garbage-adapter"):
            refused = client.post(f"/v1/datastores/{name}/select", headers=auth("alpha"), json=body)
            assert refused.status_code == 503 and "not ready (failed: " in refused.text
        for name in ("no-checkpoints", "no-current"):
            missing = client.post(f"/v1/datastores/{name}/select", headers=auth("alpha"), json=body)
            assert missing.status_code == 404, missing.text
