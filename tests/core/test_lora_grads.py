"""Batched per-example LoRA gradients against a one-example-at-a-time autograd loop."""

import pytest
import torch

from less_core.config import LoraSettings
from less_core.data import Example, collate, tokenize_example
from less_core.lora import attach_lora
from less_core.lora_grads import PerExampleGradients, lora_parameters, response_losses
from tests.tiny_llm import tiny_llama, tiny_tokenizer

EXAMPLES = [
    {
        "id": "a",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}],
    },
    {"id": "b", "prompt": "Translate: chat -> ", "completion": "cat, a small animal"},
    {
        "id": "c",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "and 3+3?"},
            {"role": "assistant", "content": "6, of course"},
        ],
    },
    {"id": "d", "prompt": "x", "completion": "y"},
]


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    torch.manual_seed(1)
    model = attach_lora(
        tiny_llama(len(tok)),
        LoraSettings(
            rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "down_proj")
        ),
    )
    # Fresh LoRA B is zero; make it non-zero so A's gradients are non-trivial too.
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    model.eval()
    toks = [tokenize_example(tok, Example.from_dict(e), max_length=64) for e in EXAMPLES]
    return tok, model, toks


def loop_reference(model, tok, toks):
    """One example at a time, unpadded, HF's own loss (mean over shifted label tokens)."""
    params = lora_parameters(model)
    out = []
    for t in toks:
        model.zero_grad()
        ids = torch.tensor([t.input_ids])
        loss = model(input_ids=ids, labels=torch.tensor([t.labels])).loss
        loss.backward()
        out.append([p.module.weight.grad.reshape(-1).clone() for p in params])
    return out


def test_batched_per_example_grads_match_loop(setup):
    tok, model, toks = setup
    lengths = [len(t.input_ids) for t in toks]
    assert len(set(lengths)) == len(lengths), "examples must have mixed lengths to exercise padding"
    batch = collate(toks, tok.pad_token_id)
    blocks, losses = PerExampleGradients(model).compute(batch)
    reference = loop_reference(model, tok, toks)
    assert len(blocks) == len(lora_parameters(model)) == 2 * 3 * 2  # A+B, 3 modules, 2 layers
    for m, block in enumerate(blocks):
        for b in range(len(toks)):
            # float32 sums in a different order: 1e-5 relative is far below any real difference.
            torch.testing.assert_close(block[b], reference[b][m], rtol=1e-4, atol=1e-6)
    # losses equal HF's per-example loss
    for b, t in enumerate(toks):
        with torch.no_grad():
            hf = model(input_ids=torch.tensor([t.input_ids]), labels=torch.tensor([t.labels])).loss
        assert losses[b].item() == pytest.approx(hf.item(), rel=1e-5)


def test_response_losses_nan_for_example_without_response(setup):
    tok, model, toks = setup
    batch = collate(toks[:2], tok.pad_token_id)
    batch.labels[1] = -100
    with torch.no_grad():
        losses = response_losses(model, batch)
    assert torch.isfinite(losses[0]) and torch.isnan(losses[1])
    with pytest.raises(ValueError, match="no response tokens"):
        PerExampleGradients(model).compute(batch)


def _autocast_case(setup, device: str, dtype: torch.dtype) -> None:
    """Gradients under autocast point the same way as full-precision ones (cosine ~1)."""
    tok, model, toks = setup
    model = model.to(device)
    batch = collate(toks, tok.pad_token_id).to(device)
    try:
        full, _ = PerExampleGradients(model).compute(batch)
        half, _ = PerExampleGradients(model, autocast=dtype).compute(batch)
    finally:
        model.to("cpu")  # the module-scoped fixture is shared
    assert all(b.dtype == torch.float32 for b in half)
    flat_full = torch.cat(full, dim=1).double()
    flat_half = torch.cat(half, dim=1).double()
    cos = torch.nn.functional.cosine_similarity(flat_full, flat_half, dim=1)
    assert not torch.equal(flat_full, flat_half)  # autocast did change the arithmetic
    assert cos.min() > 0.99, cos  # measured on the tiny model: 1.0000 to 4 places


def test_bf16_autocast_keeps_gradient_directions_on_cpu(setup):
    _autocast_case(setup, "cpu", torch.bfloat16)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_gradient_directions_on_cuda(setup, dtype):
    _autocast_case(setup, "cuda", dtype)
