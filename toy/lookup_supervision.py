"""Attention supervision for the toy VLM's language model (training-time only).

Answering "what colour is the circle?" is a lookup: the position that predicts the answer must
attend to the circle's visual tokens. Learnt from the answer loss alone, that lookup forms slowly
(with ground-truth symbolic patch features in place of the tower, the LM was still at chance on
colour questions after 600 steps). The generator knows which object each answer is read from, so
one attention head of the last layer is told where to look: the loss is
``-log(attention mass on the answer's object patches)`` at each answer-predicting position, for
the question types that have such objects (colour, shape, position, count, exists-"yes").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import patch_labels, world


class HeadAttentionProbe:
    """One head's attention weights in one Llama layer, recomputed from that layer's input.

    The LM keeps its fast attention kernel (which returns no weights); a forward pre-hook keeps the
    layer's input and rotary embeddings, and ``weights`` recomputes the head's causal softmax with
    gradients, the way ``encoders.open_clip_tower`` recomputes the [CLS] attention.
    """

    def __init__(self, attention: torch.nn.Module, head: int):
        if attention.config.num_key_value_heads != attention.config.num_attention_heads:
            raise ValueError("HeadAttentionProbe expects one key/value head per query head")
        self.attention = attention
        self.head = head
        self._inputs: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
        attention.register_forward_pre_hook(self._keep_inputs, with_kwargs=True)

    def _keep_inputs(self, module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]  # (B, T, D) after input_layernorm
        self._inputs = (hidden, kwargs["position_embeddings"])

    def weights(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, T) attention of the head in the last forward; ``padding_mask`` (B, T), 1 = token."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        hidden, (cos, sin) = self._inputs
        attn, d = self.attention, self.attention.head_dim
        rows = slice(self.head * d, (self.head + 1) * d)
        q = F.linear(hidden, attn.q_proj.weight[rows])[:, None]  # (B, 1, T, d)
        k = F.linear(hidden, attn.k_proj.weight[rows])[:, None]  # (B, 1, T, d)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        logits = (q @ k.transpose(-1, -2))[:, 0] * attn.scaling  # (B, T, T)
        T = logits.shape[-1]
        causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
        allowed = causal[None] & padding_mask.bool()[:, None, :]  # (B, T, T)
        return logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1)


def answer_objects(scene: world.Scene, qa: world.QA) -> list[world.Obj] | None:
    """The objects ``qa``'s answer is read from, or None where there are none to point at."""
    words = set(qa.question.lower().rstrip("?.").split())
    objects = scene.objects
    if qa.qtype == "colour":
        return [o for o in objects if o.shape in words]
    if qa.qtype == "shape":
        return [o for o in objects if o.shape == qa.answer]
    if qa.qtype == "position":
        return [o for o in objects if o.position == qa.answer]
    if qa.qtype == "count":
        return list(objects)
    if qa.qtype == "exists" and qa.answer == "yes":
        return [o for o in objects if o.shape in words and o.colour in words]
    return None  # exists-"no" (nothing to look at), describe (everything, in order)


def key_word(qa: world.QA) -> str | None:
    """The question's word that names what to look up ("circle" in "what colour is the circle?")."""
    words = qa.question.lower().rstrip("?.").split()
    if qa.qtype in ("colour", "position", "exists"):
        return next(w for w in reversed(words) if w in world.SHAPES)
    if qa.qtype == "shape":
        return next(w for w in reversed(words) if w in world.POSITIONS)
    return None


def key_token(tokenizer, word: str) -> int:
    """Id of the last token of `` word`` (e.g. "left" of " top-left"), as it appears in a question."""
    return tokenizer(" " + word, add_special_tokens=False).input_ids[-1]


def object_patches(objects: list[world.Obj]) -> torch.Tensor:
    """(64,) bool: the patches any of ``objects`` covers (the ``patch_labels`` threshold)."""
    covered = torch.zeros(patch_labels.GRID**2, dtype=torch.bool)
    for obj in objects:
        covered |= torch.from_numpy(patch_labels.patch_coverage(obj) >= patch_labels.MIN_COVERAGE)
    return covered


def answer_positions(labels: torch.Tensor, ignore: int) -> list[int]:
    """Positions t of a (T,) label row whose next token starts an answer, in turn order."""
    answer = labels != ignore  # (T,)
    starts = answer[1:] & ~answer[:-1]  # (T-1,) token t+1 starts an answer
    return starts.nonzero().flatten().tolist()


def key_position(ids: torch.Tensor, answer_at: int, key: int, after: int) -> int | None:
    """Last position in ``(after, answer_at]`` of a (T,) id row holding token ``key``, or None."""
    hits = (ids[after + 1 : answer_at + 1] == key).nonzero().flatten()
    return after + 1 + int(hits[-1]) if len(hits) else None


def lookup_loss(
    attention: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    targets: list[list[tuple[torch.Tensor, int | None] | None] | None],
    image_token_id: int,
    ignore: int,
) -> torch.Tensor:
    """Mean ``-log`` attention mass on the answer's patches, from the query positions.

    attention: (B, T, T) one head's weights; ids, labels: (B, T). ``targets[b]``: per turn None or
    (a (64,) bool patch mask, the key token id or None); None for a whole sequence (e.g. its visual
    tokens were pruned). The query is the key token of the turn's question when one is given (and
    it comes after the image), else the position that predicts the answer.
    """
    terms = []
    for b, turns in enumerate(targets):
        if turns is None:
            continue
        slots = (ids[b] == image_token_id).nonzero().flatten()  # (64,) visual token positions
        previous_answer = -1
        for t, target in zip(answer_positions(labels[b], ignore), turns):
            if target is not None and target[0].any():
                mask, key = target
                query = t if key is None else key_position(ids[b], t, key, previous_answer)
                if query is not None and query > slots[-1]:
                    terms.append(-torch.log(attention[b, query, slots[mask]].sum() + 1e-6))
            previous_answer = t
    return torch.stack(terms).mean() if terms else attention.new_zeros(())


class LayerInput:
    """The residual stream entering one Llama decoder layer in the last forward, (B, T, D), with gradients."""

    def __init__(self, layer: torch.nn.Module):
        self.hidden: torch.Tensor | None = None
        layer.register_forward_pre_hook(self._keep, with_kwargs=True)

    def _keep(self, module, args: tuple, kwargs: dict) -> None:
        self.hidden = args[0] if args else kwargs["hidden_states"]


def key_lookups(
    ids: torch.Tensor, labels: torch.Tensor, targets: list[list[tuple[torch.Tensor, int | None] | None] | None], ignore: int
) -> list[tuple[int, int, int]]:
    """(row, key word position, answer-predicting position) of every turn with a key token
    (``targets`` as in ``lookup_loss``)."""
    out = []
    for b, turns in enumerate(targets):
        if turns is None:
            continue
        previous_answer = -1
        for t, target in zip(answer_positions(labels[b], ignore), turns):
            if target is not None and target[1] is not None:
                key = key_position(ids[b], t, target[1], previous_answer)
                if key is not None:
                    out.append((b, key, t))
            previous_answer = t
    return out


def key_answer_loss(hidden: torch.Tensor, readout, ids: torch.Tensor, lookups: list[tuple[int, int, int]]) -> torch.Tensor:
    """Mean CE of the answer's first token read out (``readout``: final norm + LM head) from the
    residual stream at the question's key word: the key word must already hold the answer where a
    later head copies it to the answer position (the lookup's value path, not only its attention).

    hidden: (B, T, D) the residual entering some layer; ids: (B, T); ``lookups`` from ``key_lookups``.
    """
    if not lookups:
        return hidden.new_zeros(())
    rows = torch.stack([hidden[b, key] for b, key, _ in lookups])  # (N, D)
    answers = torch.stack([ids[b, t + 1] for b, _, t in lookups])  # (N,)
    return F.cross_entropy(readout(rows), answers)


def relay_loss(attention: torch.Tensor, lookups: list[tuple[int, int, int]]) -> torch.Tensor:
    """Mean ``-log`` attention of one head from each answer-predicting position to its key word
    (which ``key_answer_loss`` makes hold the answer): the relay's second hop. attention: (B, T, T)."""
    if not lookups:
        return attention.new_zeros(())
    return torch.stack([-torch.log(attention[b, t, key] + 1e-6) for b, key, t in lookups]).mean()
