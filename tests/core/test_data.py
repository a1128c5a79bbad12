"""JSONL examples, chat templating and response-only loss masks (SPEC §2.2)."""

from __future__ import annotations

import json

import pytest
import torch

from indexer.jsonl import iter_examples, read_examples
from less_core.data import (
    FALLBACK_CHAT_TEMPLATE,
    IGNORE_INDEX,
    Example,
    TokenizedExample,
    collate,
    tokenize_example,
)
from less_core.errors import DataError
from tests.tiny_llm import tiny_tokenizer

CHAT = {
    "id": "c1",
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes!"}],
}
PC = {"id": "p1", "prompt": "Q: 2+2=", "completion": " 4"}


def write_jsonl(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def test_read_examples_kinds_and_metadata(tmp_path):
    rows = [
        dict(CHAT, task="greet", extra={"a": [1, 2]}),
        dict(PC, subtask="math"),
        {"id": 7, "prompt": "", "completion": "x"},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", [rows[0], "", "   ", rows[1], rows[2]])
    exs = read_examples(path)
    assert [e.id for e in exs] == ["c1", "p1", "7"]
    assert exs[0].messages == tuple(CHAT["messages"]) and exs[0].prompt is None
    assert exs[0].metadata == {"task": "greet", "extra": {"a": [1, 2]}}
    assert exs[1].prompt == "Q: 2+2=" and exs[1].completion == " 4" and exs[1].messages is None
    assert exs[1].subtask == "math" and exs[1].metadata == {}
    assert list(iter_examples(path)) == exs


def test_missing_ids_allowed_when_not_required(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{k: v for k, v in CHAT.items() if k != "id"}] * 2)
    exs = read_examples(path, require_id=False)
    assert [e.id for e in exs] == ["", ""]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ('{"id": "x", "prompt": "a", ', "malformed JSON"),
        ({"prompt": "a", "completion": "b"}, "missing 'id'"),
        (dict(PC, id="p0"), "duplicate id 'p0'"),
        (dict(CHAT, id="z", prompt="also"), "not both"),
        ({"id": "z", "prompt": "a", "completion": "  \n"}, "empty 'completion'"),
        (
            {"id": "z", "messages": [{"role": "user", "content": "hi"}]},
            "no non-empty assistant turn",
        ),
        (
            {
                "id": "z",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": " "},
                ],
            },
            "no non-empty assistant turn",
        ),
        ({"id": "z", "messages": [{"role": "bot", "content": "hi"}]}, "messages[0]"),
        ({"id": "z", "messages": []}, "non-empty list"),
        ({"id": "z", "prompt": "a"}, "need 'messages'"),
        ({"id": True, "prompt": "a", "completion": "b"}, "'id' must be"),
        ({"id": "a\nb", "prompt": "a", "completion": "b"}, "single-line"),
        ({"id": "z", "prompt": "a", "completion": "b", "subtask": 3}, "'subtask'"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_errors_name_the_line(tmp_path, bad, fragment):
    # line 1 ok, line 2 blank (still counted), line 3 ok, line 4 bad
    path = write_jsonl(tmp_path / "bad.jsonl", [dict(PC, id="p0"), "", CHAT, bad])
    with pytest.raises(DataError) as info:
        read_examples(path)
    msg = str(info.value)
    assert f"{path}:4:" in msg and fragment in msg, msg
    # the good lines before it stream fine
    it = iter_examples(path)
    assert next(it).id == "p0" and next(it).id == "c1"
    with pytest.raises(DataError):
        next(it)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="no examples"):
        read_examples(write_jsonl(tmp_path / "e.jsonl", ["", " "]))
    with pytest.raises(DataError, match="cannot read"):
        read_examples(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------------------------
# Tokenization and masks
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def tok():
    return tiny_tokenizer()


def text(tok, ids):
    # character-level tokenizer: tokens joined back give the exact text
    return "".join(tok.convert_ids_to_tokens(ids))


def labelled_spans(t: TokenizedExample):
    """Maximal runs of positions whose label is not ignored; labels must equal the inputs there."""
    spans, start = [], None
    for i, lab in enumerate(t.labels + [IGNORE_INDEX]):
        if lab != IGNORE_INDEX:
            assert i < len(t.input_ids) and lab == t.input_ids[i]
            start = i if start is None else start
        elif start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_chat_mask_covers_assistant_content_and_end_of_turn(tok):
    t = tokenize_example(tok, Example.from_dict(CHAT), max_length=512)
    assert len(t.input_ids) == len(t.labels)
    full = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyes!<|im_end|>\n"
    assert text(tok, t.input_ids) == full
    (span,) = labelled_spans(t)
    assert text(tok, t.input_ids[span[0] : span[1]]) == "yes!<|im_end|>\n"
    assert span[1] == len(t.input_ids)
    assert t.n_response_tokens == len("yes!") + 2
    # nothing else of the assistant header is labelled
    assert text(tok, t.input_ids[: span[0]]).endswith("<|im_start|>assistant\n")


def test_multi_turn_labels_every_assistant_turn(tok):
    ex = Example.from_dict(
        {
            "id": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "and 3+3?"},
                {"role": "assistant", "content": "6, of course"},
            ],
        }
    )
    t = tokenize_example(tok, ex, max_length=512)
    spans = labelled_spans(t)
    assert [text(tok, t.input_ids[a:b]) for a, b in spans] == [
        "4<|im_end|>\n",
        "6, of course<|im_end|>\n",
    ]
    between = text(tok, t.input_ids[spans[0][1] : spans[1][0]])
    assert between == "<|im_start|>user\nand 3+3?<|im_end|>\n<|im_start|>assistant\n"


def test_prompt_completion_mask(tok):
    t = tokenize_example(tok, Example.from_dict(PC), max_length=512)
    assert text(tok, t.input_ids) == "Q: 2+2= 4<|im_end|>"
    (span,) = labelled_spans(t)
    assert span == (len("Q: 2+2="), len(t.input_ids))
    assert text(tok, t.input_ids[span[0] :]) == " 4<|im_end|>"
    assert t.input_ids[-1] == tok.eos_token_id


def test_truncation(tok):
    full = tokenize_example(tok, Example.from_dict(CHAT), max_length=512)
    for n in (5, len(full.input_ids) - 3, len(full.input_ids)):
        t = tokenize_example(tok, Example.from_dict(CHAT), max_length=n)
        assert t.input_ids == full.input_ids[:n] and t.labels == full.labels[:n]
    t = tokenize_example(tok, Example.from_dict(PC), max_length=4)
    assert len(t.input_ids) == 4 and t.n_response_tokens == 0  # the response was cut away


def test_tokenizer_without_chat_template_gets_fallback(tok):
    tok.chat_template = None
    t = tokenize_example(tok, Example.from_dict(CHAT), max_length=512)
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE
    assert text(tok, t.input_ids) == "<|user|>\nhi\n<|assistant|>\nyes!<|im_end|>\n"
    (span,) = labelled_spans(t)
    assert text(tok, t.input_ids[span[0] : span[1]]) == "yes!<|im_end|>\n"


def test_prompt_completion_ignores_chat_template(tok):
    a = tokenize_example(tok, Example.from_dict(PC), max_length=64)
    tok.chat_template = None
    assert tokenize_example(tok, Example.from_dict(PC), max_length=64) == a


# --------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------
def test_collate_pads_right():
    a = TokenizedExample([5, 6, 7], [IGNORE_INDEX, 6, 7])
    b = TokenizedExample([8], [8])
    c = TokenizedExample([1, 2, 3, 4, 9], [IGNORE_INDEX] * 3 + [4, 9])
    batch = collate([a, b, c], pad_token_id=0)
    assert torch.equal(
        batch.input_ids, torch.tensor([[5, 6, 7, 0, 0], [8, 0, 0, 0, 0], [1, 2, 3, 4, 9]])
    )
    P = IGNORE_INDEX
    assert torch.equal(
        batch.labels, torch.tensor([[P, 6, 7, P, P], [8, P, P, P, P], [P, P, P, 4, 9]])
    )
    assert torch.equal(
        batch.attention_mask, torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    )
    assert batch.input_ids.dtype == batch.labels.dtype == batch.attention_mask.dtype == torch.long
    assert torch.equal(batch.to("cpu").labels, batch.labels)
    with pytest.raises(DataError):
        collate([], pad_token_id=0)


def test_collate_real_examples(tok):
    toks = [tokenize_example(tok, Example.from_dict(e), 512) for e in (CHAT, PC)]
    batch = collate(toks, tok.pad_token_id)
    for i, t in enumerate(toks):
        n = len(t.input_ids)
        assert batch.input_ids[i, :n].tolist() == t.input_ids
        assert batch.labels[i, :n].tolist() == t.labels
        assert (batch.input_ids[i, n:] == tok.pad_token_id).all()
        assert (batch.labels[i, n:] == IGNORE_INDEX).all() and batch.attention_mask[i].sum() == n
