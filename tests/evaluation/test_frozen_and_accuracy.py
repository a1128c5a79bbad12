"""The frozen-prefix path equals the full forward (losses and LoRA gradients), and option
accuracy equals a brute-force log-likelihood loop on the tiny model."""

import numpy as np
import pytest
import torch

from bench.evaluation.data import closed_answers, option_rows, options_of
from bench.evaluation.frozen import PrefixStore, compute_prefix, from_prefix
from bench.evaluation.train import EvalSet, LoraRunner, option_accuracy
from indexer.model_io import load_tokenizer
from less_core.config import LoraSettings
from less_core.data import Example, collate, tokenize_example
from less_core.lora_grads import response_losses

LORA = LoraSettings(rank=4, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj"), layers=(1,))


def _chat(i, user, answer):
    return {
        "id": f"t/{i}",
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
    }


EVAL_ROWS = [
    _chat(0, "Which is a color?\n\nOptions:\n- red\n- table\n- seven", "red"),
    _chat(1, "Pick the even number.\n\nOptions:\n- 3\n- 8", "8"),
    _chat(2, "Is ice cold? Answer yes or no.", "yes"),
    _chat(3, "Is fire cold? Answer yes or no.", "no"),
    _chat(4, "Name a fruit.\n\nOptions:\n- stone\n- pear\n- cloud\n- river", "pear"),
]


@pytest.fixture(scope="module")
def runner(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    r = LoraRunner(tiny_model_dir, LORA, tok.pad_token_id)
    torch.manual_seed(5)
    with torch.no_grad():  # non-zero B: the adapters change the output
        for name, p in r.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return r, tok


def _store(runner, tok, rows):
    tokens = [tokenize_example(tok, Example.from_dict(r), 256) for r in rows]
    hidden, offsets = compute_prefix(runner.model, runner.start, tokens, tok.pad_token_id)
    return PrefixStore([r["id"] for r in rows], tokens, hidden, offsets), tokens


def test_prefix_path_equals_full_forward(runner):
    r, tok = runner
    store, tokens = _store(r, tok, EVAL_ROWS)
    rows = [4, 0, 2]  # different lengths: padding inside the batch
    batch, states = store.batch(rows, tok.pad_token_id)
    r.model.train()
    with from_prefix(r.model, r.start, states):
        fast = response_losses(r.model, batch)
    fast.sum().backward()
    fast_grads = {n: p.grad.clone() for n, p in r.model.named_parameters() if p.requires_grad}
    r.model.zero_grad()
    full = response_losses(r.model, collate([tokens[i] for i in rows], tok.pad_token_id))
    full.sum().backward()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    for name, p in r.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(fast_grads[name], p.grad, rtol=1e-4, atol=1e-7)
    r.model.zero_grad()
    r.model.eval()


def test_options_parsed_and_closed_sets():
    assert options_of(EVAL_ROWS[0]["messages"][0]["content"]) == ["red", "table", "seven"]
    assert options_of("no options here") is None
    assert options_of("Options:\n- a\n- b") == ["a", "b"]
    assert closed_answers(EVAL_ROWS[2:4]) == ["no", "yes"]
    free_form = [_chat(i, f"Say {i}.", f"word{i}") for i in range(7)]
    assert closed_answers(free_form) is None  # more distinct answers than a closed set has
    rows, groups = option_rows(EVAL_ROWS, ["no", "yes"])
    assert [g.eval_id for g in groups] == ["t/0", "t/1", "t/2", "t/3", "t/4"]
    assert [g.correct for g in groups] == [0, 1, 1, 0, 1]
    assert len(rows) == 3 + 2 + 2 + 2 + 4


@torch.no_grad()
def _brute_loglik(model, tok, row):
    """Sum of log-probabilities of the assistant tokens, one example, plain full forward."""
    t = tokenize_example(tok, Example.from_dict(row), 256)
    logits = model(input_ids=torch.tensor([t.input_ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    total = 0.0
    for pos in range(1, len(t.input_ids)):
        if t.labels[pos] != -100:
            total += float(logp[pos - 1, t.labels[pos]])
    return total


def test_option_accuracy_equals_brute_force(runner):
    r, tok = runner
    opt_rows, groups = option_rows(EVAL_ROWS, ["no", "yes"])
    all_rows = EVAL_ROWS + opt_rows
    store, _ = _store(r, tok, all_rows)
    at = {row["id"]: i for i, row in enumerate(all_rows)}
    option_at = {x["id"]: at[x["id"]] for x in opt_rows}
    evalset = EvalSet("t", store, tuple(range(len(EVAL_ROWS))), option_at, tuple(groups))
    result = r.evaluate(evalset)
    by_id = {row["id"]: row for row in opt_rows}
    brute = [[_brute_loglik(r.model, tok, by_id[i]) for i in g.option_ids] for g in groups]
    hits = [int(np.argmax(s)) == g.correct for s, g in zip(brute, groups)]
    assert result["accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert result["n_choice"] == len(groups)
    full = response_losses(
        r.model, collate([store.tokens[i] for i in range(len(EVAL_ROWS))], tok.pad_token_id)
    ).detach()
    assert result["loss"] == pytest.approx(float(full.mean()), rel=1e-5)
    # The per-option log-likelihoods themselves, not only the argmax.
    losses = r.losses(store, [at[i] for g in groups for i in g.option_ids])
    n_tok = [store.tokens[at[i]].n_response_tokens for g in groups for i in g.option_ids]
    np.testing.assert_allclose(-losses * n_tok, [x for s in brute for x in s], rtol=1e-4)


def test_option_accuracy_counts_ties_as_wrong():
    assert option_accuracy([[0.0, -1.0], [-2.0, -2.0], [-3.0, -1.0]], [0, 0, 1]) == 2 / 3
