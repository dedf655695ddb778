"""Incremental detokenization: turn a growing list of generated ids into new-text deltas.

Each step decodes all generated ids and emits the suffix not sent yet. A trailing U+FFFD (an
incomplete UTF-8 sequence split across byte-level tokens) is held back until the following
tokens complete it; ``flush`` sends whatever is left at the end. Concatenating every delta
gives ``tokenizer.decode(ids, skip_special_tokens=True)``.
"""

from __future__ import annotations

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Stateful text streamer for one generation."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""  # text already emitted; always a prefix of the decoded text

    def _decode(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one generated id and return the new, complete text (may be "")."""
        self.ids.append(token_id)
        text = self._decode()
        end = len(text)
        while end > len(self.sent) and text[end - 1] == REPLACEMENT_CHAR:
            end -= 1  # hold back: the next tokens may complete this character
        return self._emit(text, end)

    def flush(self) -> str:
        """Return all text not sent yet, held-back U+FFFD included (call once, at the end)."""
        text = self._decode()
        return self._emit(text, len(text))

    def _emit(self, text: str, end: int) -> str:
        # Offsets, not a prefix test: if a tokenizer cleanup rule ever rewrites text already sent, what
        # was sent can't be taken back, so streaming simply continues from the same character offset.
        delta = text[len(self.sent) : end]
        self.sent += delta
        return delta
