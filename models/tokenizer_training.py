"""Train the small byte-level BPE chat tokenizer locally (no hub), in milliseconds.

Used when a checkpoint is generated (the ``tiny`` and ``bench`` profiles, the toy VLM's training).
Byte-level BPE means any text round-trips (no ``<unk>`` in practice). The trained tokenizer carries
Triptych's chat format (``models.chat_format``: special tokens, chat template).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .chat_format import BOS, CHAT_TEMPLATE, EOS, IMAGE, PAD, SPECIAL_TOKENS, UNK

_WORDS = {
    "shapes": "circle square triangle rectangle star hexagon diamond oval line dot ring cross heart arrow",
    "colours": "red green blue yellow orange purple pink black white grey gray brown cyan magenta",
    "sizes": "small large big tiny huge medium little wide tall short thin thick",
    "places": "left right top bottom center centre middle corner edge above below next to inside outside",
    "image": "image picture photo photograph drawing pixel pixels background foreground scene object objects",
    "questions": "what which where how many is are there does do the a an of in on this that these those",
    "verbs": "show shows see describe count find answer contains has have look looks colour color shape",
    "numbers": "zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9",
    "chat": "user assistant system you your i it yes no please thanks hello sorry can cannot not",
}

_SENTENCES = [
    "what shape is in the image?",
    "what colour is the circle?",
    "how many squares are there in the picture?",
    "the image shows a red circle on a white background.",
    "there are two blue triangles and one green square.",
    "describe the picture.",
    "a small yellow star is in the top left corner.",
    "is there a purple hexagon in the image? yes, there is.",
    "which object is the largest? the large orange rectangle.",
    "the background is black and the shape is white.",
    "count the dots: one, two, three, four, five.",
    "where is the triangle? it is at the bottom right.",
    "You are a helpful assistant that answers questions about images.",
    "Hello! Please describe this photo in one sentence.",
    "The answer is: 3 circles, 2 squares and 1 star.",
]


def training_corpus() -> list[str]:
    """The built-in English corpus (fixed order, so training is deterministic)."""
    lines = list(_SENTENCES)
    for group in _WORDS.values():
        words = group.split()
        lines.append(" ".join(words))
        lines.append(" ".join(w.capitalize() for w in words))
        lines.extend(f"the {w} is {c}" for w in words[:6] for c in _WORDS["colours"].split()[:4])
    return lines


def train_chat_tokenizer(vocab_size: int = 512, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` (default: ``training_corpus()``), in milliseconds."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else training_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=[IMAGE],
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
