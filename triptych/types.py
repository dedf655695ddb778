"""Typed messages that cross stage boundaries (frozen dataclasses; tensors stay tensors)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class VisionFeatures:
    """What the vision stage produces for one image; also what the embedding cache stores.

    Enough to serve any pruning method and keep ratio from one cache entry.
    """

    tokens: torch.Tensor  # (N, D_lm) projected patch tokens in spatial (row-major) order, [CLS] excluded
    cls_attention: torch.Tensor  # (N,) attention of the [CLS] query over the N patches, mean over heads

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens, "cls_attention": self.cls_attention}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> VisionFeatures:
        return cls(tokens=tensors["tokens"], cls_attention=tensors["cls_attention"])


@dataclass(frozen=True)
class SamplingParams:
    """Decoding knobs. temperature 0 means greedy."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """Raw image file bytes that already passed edge validation (encoders.image_io.load_image)."""

    data: bytes


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    parts: tuple[TextPart | ImagePart, ...]


@dataclass(frozen=True)
class TextDelta:
    """One step of streamed decoder output."""

    text: str  # new text since the previous delta (may be "")
    finish_reason: str | None = None  # None while streaming; "stop" (EOS) or "length" on the last delta
    completion_tokens: int = 0  # tokens generated so far
    timings_ms: dict[str, float] = field(default_factory=dict)  # on the last delta: "prefill", "decode"


@dataclass(frozen=True)
class VisualInput:
    """One image as the decoder stage receives it: where its features are and how to prune them.

    The features travel by reference (``key`` into the embedding cache, read by the decoder replica)
    when the ingress found them cached; ``features`` carries them only when they may not be there
    (just encoded, cache disabled or down), since the cache is never the source of truth.
    """

    key: str  # embedding-cache key of the image's VisionFeatures
    pruning_method: str  # a registered pruner name (encoders.pruning)
    keep: int  # visual tokens kept, 1..N
    features: VisionFeatures | None = None  # None: read them from the cache under `key`


@dataclass(frozen=True)
class ChatUsage:
    prompt_tokens: int
    completion_tokens: int
    visual_tokens_in: int
    visual_tokens_kept: int
    cache_hit: bool
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ImageProgress:
    """One denoising step finished (streamed to clients as a progress event)."""

    step: int  # steps done, 1..total_steps
    total_steps: int
    elapsed_ms: float


@dataclass(frozen=True)
class GeneratedImages:
    """What the denoiser stage returns at the end: PNG files and the seed of each image."""

    pngs: tuple[bytes, ...]
    seeds: tuple[int, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)  # "denoise", "vae_decode"


@dataclass(frozen=True)
class ImageResult:
    """The final event of a text-to-image workflow."""

    pngs: tuple[bytes, ...]
    seeds: tuple[int, ...]
    cache_hit: bool  # prompt and negative prompt embeddings both came from the cache
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class VisionInfo:
    """Static facts about the vision stage, used for cache keys and token budgets."""

    model_id: str
    revision: str
    preprocess: dict
    num_visual_tokens: int

    @classmethod
    def from_fingerprint(cls, fingerprint: dict, num_visual_tokens: int) -> VisionInfo:
        """Split an encoder fingerprint into model id, revision and the preprocessing config."""
        rest = dict(fingerprint)
        return cls(str(rest.pop("model_id")), str(rest.pop("revision")), rest, num_visual_tokens)


@dataclass(frozen=True)
class DecoderInfo:
    """Static facts about the decoder stage: its model id and how many tokens fit in its context."""

    model_id: str
    context_length: int


@dataclass(frozen=True)
class TextEncoderInfo:
    """Static facts about the text-encoder stage, used for prompt-embedding cache keys."""

    model_id: str
    revision: str
    tokenizer_id: str


@dataclass(frozen=True)
class ImageParams:
    """What to sample: ``n`` images of ``width`` x ``height`` pixels from seeds ``seed .. seed + n - 1``.

    ``cache_interval`` is DeepCache's knob: the full U-Net runs every ``cache_interval`` steps and
    the steps in between reuse its deep features (``denoisers.deep_cache``); 1 = no caching.
    Validation (named fields, limits) is ``denoisers.params.validate_image_params``.
    """

    width: int
    height: int
    steps: int
    sampler: str
    guidance_scale: float
    seed: int
    n: int
    cache_interval: int = 1


@dataclass(frozen=True)
class EmbedItem:
    """One input of an embeddings request: exactly one of a text or an image file's bytes.

    Validation (exactly one set, non-empty, a decodable image) is ``pipelines.embeddings``'s.
    """

    text: str | None = None
    image: bytes | None = None  # raw PNG / JPEG / WEBP / GIF file bytes


@dataclass(frozen=True)
class EmbedderInfo:
    """Static facts about the joint image-text embedder stage: cache keys, limits and usage need them."""

    model_id: str
    revision: str  # short sha256 of the checkpoint's files (weights, config, tokenizer)
    dimensions: int  # D, the joint space's size
    context_length: int  # the most tokens one text may have (longer texts are rejected)
    image_tokens: int  # patch tokens one image counts as in usage (0 when the tower does not say)
    preprocess: dict = field(default_factory=dict)  # image preprocessing + dtype: part of the cache keys


@dataclass(frozen=True)
class Embeddings:
    """What the embedder stage returns for a batch of texts or of images."""

    vectors: torch.Tensor  # (N, D) float32, L2-normalised
    tokens: tuple[int, ...]  # per input: text tokens (with special tokens), or EmbedderInfo.image_tokens


@dataclass(frozen=True)
class EmbeddingResult:
    """The embeddings of a request's items, in their order (``pipelines.embeddings.EmbeddingPipeline``)."""

    vectors: torch.Tensor  # (N, D) float32, L2-normalised: cosine similarity is a dot product
    cache_hit: bool  # every item's vector came from the cache
    prompt_tokens: int  # sum of the items' tokens (Embeddings.tokens)
    timings_ms: dict[str, float] = field(default_factory=dict)  # "embed" (when the stage ran), "cache"
