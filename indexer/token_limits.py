"""Token limits checked cheaply: a target far over the limit is refused before it is tokenized.

``QueryEngine.tokenize_targets`` must refuse a target over ``max_tokens`` without paying for
the whole target: tokenizing a 5 MB prompt, or re-rendering every prefix of a 320-turn chat,
takes seconds of the single worker. ``TokenCounter`` gives a *lower bound* on a text's token
count whose cost is bounded by the limit, not by the text:

* A fast tokenizer normalizes, splits the text into pieces (its pre-tokenizer: words, spaces,
  digits, or single characters), and tokenizes each piece on its own. Tokenizing a prefix of
  the text therefore gives, for every piece that the prefix holds whole, exactly the tokens the
  whole text gives it. Only the pieces at the cut can differ, so the prefix's tokens minus those
  of its last ``_BOUNDARY_PIECES`` pieces are a lower bound on the whole text's count.
* The prefix starts at ``_CHARS_PER_TOKEN`` characters per allowed token and grows by that
  factor until the bound passes the limit (refused) or the prefix is the whole text (then the
  count is exact): total work is linear in the text and, for any tokenizer whose tokens are at
  most a few dozen characters, bounded by a multiple of the limit. A tokenizer without a
  pre-tokenizer (one piece) gets no bound from a prefix: it is counted whole, still linear.
* A chat is rendered once with its template and counted as one text (the chat's token ids are
  the tokens of that rendering). Before even that, a chat with more messages than the limit is
  refused when the template is seen, at start-up, to spend at least one token per message.

Only a target that passes is tokenized exactly, with its loss mask (``tokenize_example``). A
target whose characters and messages together are within the limit (``within_cheap_size``)
skips the bound and is tokenized once, exactly: that costs at most what the limit allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from less_core.data import Example, ensure_chat_template

_CHARS_PER_TOKEN = 4
"""First prefix length per allowed token, and the prefix's growth factor."""
_BOUNDARY_PIECES = 2
"""Pieces at a prefix's end whose tokens may differ from the whole text's (a cut word, and a
space run that the pre-tokenizer's look-ahead splits differently)."""


def within_cheap_size(example: Example, limit: int) -> bool:
    """Whether a target's characters plus messages are at most ``limit``: then its exact
    tokenization (one pass, every chat prefix rendered) costs no more than the limit allows,
    and no cheaper bound is needed first."""
    if example.messages is not None:
        size = len(example.messages)
        for message in example.messages:
            size += len(message["content"])
            if size > limit:
                return False
        return True
    return len(example.prompt or "") + len(example.completion or "") <= limit


class TokenCounter:
    """Lower bounds on token counts, bounded by the limit (see the module docstring).

    Args:
        tokenizer: A Hugging Face tokenizer with the chat template the datastore uses.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.tokens_per_message = _tokens_per_message(tokenizer)
        # Pieces (word ids) come with fast tokenizers only; a slow one is always counted whole.
        self.has_pieces = bool(getattr(tokenizer, "is_fast", False))
        self.added_token_chars = max((len(t) for t in tokenizer.get_added_vocab()), default=0)

    def _ids(self, text: str, add_special_tokens: bool) -> Any:
        return self.tokenizer(text, add_special_tokens=add_special_tokens)

    def text(self, text: str, limit: int, add_special_tokens: bool = False) -> tuple[int, bool]:
        """Tokens of ``text``: ``(count, True)`` exactly, or ``(bound, False)`` with a lower
        bound already over ``limit`` (the rest of the text is never tokenized)."""
        window = _CHARS_PER_TOKEN * (limit + 1)
        while self.has_pieces and len(text) > window:
            bound = self._prefix_bound(text[:window])
            if bound > limit:
                return bound, False
            window *= _CHARS_PER_TOKEN
        return len(self._ids(text, add_special_tokens)["input_ids"]), True

    def _prefix_bound(self, prefix: str) -> int:
        """Tokens that the text beginning with ``prefix`` has at least: those of the pieces
        that end before any cut could reach them."""
        encoding = self.tokenizer(prefix, add_special_tokens=False, return_offsets_mapping=True)
        words = encoding.word_ids()
        # Past `safe` the prefix may end inside an added token ("<|im_st"), which the whole
        # text tokenizes as one token and the prefix as several pieces.
        safe = len(prefix) - self.added_token_chars
        first_cut = next(
            (w for w, (_, end) in zip(words, encoding["offset_mapping"]) if end > safe), None
        )
        if first_cut is None:  # every token ends before `safe`: only the last piece may be cut
            first_cut = next((w for w in reversed(words) if w is not None), 0)
        # The piece reaching past `safe` and the one before it (the pre-tokenizer's look-ahead)
        # may be split differently in the whole text; earlier pieces are the same.
        return sum(1 for w in words if w is not None and w <= first_cut - _BOUNDARY_PIECES)

    def example(self, example: Example, limit: int) -> tuple[int, bool]:
        """Tokens of a target as ``tokenize_example`` makes them, exactly (``True``) or as a
        lower bound over ``limit`` (``False``)."""
        if example.messages is not None:
            messages = example.messages
            floor = self.tokens_per_message * len(messages)
            if floor > limit:
                return floor, False
            return self.text(_render(self.tokenizer, messages), limit)
        prompt, exact_prompt = self.text(example.prompt or "", limit, add_special_tokens=True)
        if not exact_prompt:
            return prompt, False
        completion, exact = self.text(example.completion or "", max(0, limit - prompt - 1))
        return prompt + completion + 1, exact  # + end of sequence


def _render(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The chat as ``tokenize_example`` renders it (its token ids are this text's tokens)."""
    ensure_chat_template(tokenizer)
    text: str = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=False
    )
    return text


def _tokens_per_message(tokenizer: Any) -> int:
    """1 if the chat template spends a token on each message even when its content is empty
    (seen on a short alternating chat), else 0 (no per-message floor is used)."""
    chat = [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
    ]
    try:
        counts = [0] + [
            len(tokenizer(_render(tokenizer, chat[:n]), add_special_tokens=False)["input_ids"])
            for n in range(1, len(chat) + 1)
        ]
    except Exception:  # a template that refuses such a chat: no floor
        return 0
    return 1 if all(b - a >= 1 for a, b in zip(counts, counts[1:])) else 0
