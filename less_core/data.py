"""Examples, chat templating and response-only loss masks (SPEC §2.2).

An example is either chat ``messages`` (loss on assistant turns) or ``prompt`` + ``completion``
(loss on the completion). Tokens outside the response carry the label ``IGNORE_INDEX``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from less_core.errors import DataError

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")

# Used when a tokenizer ships without a chat template: the Tulu format the LESS reference trains
# with ("<|user|>\n...\n<|assistant|>\n...</s>").
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Example:
    """One training or target example.

    Attributes:
        id: stable identifier, unique within its file.
        messages: chat turns ``{"role", "content"}``, or None for prompt/completion examples.
        prompt: the prompt of a prompt/completion example.
        completion: its completion (the response the loss is taken on).
        subtask: target subtask label (targets only; defaults to a single subtask).
        metadata: every other field of the JSONL row, kept verbatim.
    """

    id: str
    messages: tuple[dict[str, str], ...] | None = None
    prompt: str | None = None
    completion: str | None = None
    subtask: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, row: dict[str, Any], *, require_id: bool = True) -> Example:
        """Validate a JSON object into an Example; raises DataError with a precise reason."""
        if not isinstance(row, dict):
            raise DataError("each line must be a JSON object")
        ex_id = row.get("id")
        if ex_id is None and require_id:
            raise DataError("missing 'id'")
        if ex_id is not None and (not isinstance(ex_id, (str, int)) or isinstance(ex_id, bool)):
            raise DataError(f"'id' must be a string or integer, got {type(ex_id).__name__}")
        ex_id = "" if ex_id is None else str(ex_id)
        if ex_id and ("\n" in ex_id or not ex_id.strip()):
            raise DataError(f"'id' must be non-blank and single-line, got {ex_id!r}")
        subtask = row.get("subtask")
        if subtask is not None and not isinstance(subtask, str):
            raise DataError("'subtask' must be a string")
        meta = {
            k: v
            for k, v in row.items()
            if k not in ("id", "messages", "prompt", "completion", "subtask")
        }
        messages = row.get("messages")
        if messages is not None:
            if "prompt" in row or "completion" in row:
                raise DataError("give either 'messages' or 'prompt'+'completion', not both")
            return cls(ex_id, messages=_check_messages(messages), subtask=subtask, metadata=meta)
        prompt, completion = row.get("prompt"), row.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataError("need 'messages', or string 'prompt' and 'completion'")
        if not completion.strip():
            raise DataError("empty 'completion': there is no response to take a loss on")
        return cls(ex_id, prompt=prompt, completion=completion, subtask=subtask, metadata=meta)


def _check_messages(messages: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or m.get("role") not in ROLES
            or not isinstance(m.get("content"), str)
        ):
            raise DataError(f"messages[{i}] must be {{'role': one of {ROLES}, 'content': str}}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
        raise DataError("no non-empty assistant turn: there is no response to take a loss on")
    return tuple(out)


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids and labels (IGNORE_INDEX outside the response) of one example."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_response_tokens(self) -> int:
        # Labels are shifted inside the loss: position 0 never counts as a target.
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)

    def truncated(self, max_length: int) -> TokenizedExample:
        """The first ``max_length`` tokens (itself when already that short)."""
        if len(self.input_ids) <= max_length:
            return self
        return TokenizedExample(self.input_ids[:max_length], self.labels[:max_length])


def ensure_chat_template(tokenizer: Any) -> None:
    """Give a tokenizer without a chat template the fallback (Tulu) template."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE


def _encode(tokenizer: Any, text: str) -> list[int]:
    # Chat templates write their own special tokens; the tokenizer must not add a second BOS.
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    text: str = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return text


def tokenize_example(tokenizer: Any, example: Example, max_length: int) -> TokenizedExample:
    """Tokenize with the chat template and mask everything but the response tokens.

    For chat examples each assistant turn's tokens (its content and the template's end-of-turn
    tokens) are found as the difference between the rendered prefix with a generation prompt and
    the rendered prefix including that turn. Sequences are truncated to ``max_length``.

    Raises:
        DataError: the template does not render prefixes consistently.
    """
    if example.messages is None:
        if example.prompt is None or example.completion is None:
            raise DataError(f"example {example.id!r}: needs messages, or prompt and completion")
        prompt_ids = tokenizer(example.prompt)["input_ids"]
        completion_ids = _encode(tokenizer, example.completion) + [tokenizer.eos_token_id]
        ids = prompt_ids + completion_ids
        labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    else:
        ensure_chat_template(tokenizer)
        ids = _encode(tokenizer, _render(tokenizer, example.messages, False))
        labels = [IGNORE_INDEX] * len(ids)
        for i, message in enumerate(example.messages):
            if message["role"] != "assistant":
                continue
            start = len(_encode(tokenizer, _render(tokenizer, example.messages[:i], True)))
            end_ids = _encode(tokenizer, _render(tokenizer, example.messages[: i + 1], False))
            if end_ids != ids[: len(end_ids)] or start > len(end_ids):
                raise DataError(
                    f"example {example.id!r}: chat template does not render prefixes consistently"
                )
            labels[start : len(end_ids)] = ids[start : len(end_ids)]
    return TokenizedExample(ids, labels).truncated(max_length)


@dataclass(frozen=True)
class Batch:
    """A right-padded batch. Shapes: (B, T) each."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device)
        )


def collate(examples: Sequence[TokenizedExample], pad_token_id: int) -> Batch:
    """Right-pad token ids and labels to the longest example of the batch."""
    if not examples:
        raise DataError("cannot collate an empty batch")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return Batch(ids, mask, labels)
