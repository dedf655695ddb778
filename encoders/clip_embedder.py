"""ClipEmbedder: texts and images -> L2-normalised vectors in one joint space (open_clip, plain PyTorch).

Any open_clip model directory in open_clip's own ``local-dir`` format loads with open_clip's stock
entry points, so a real checkpoint needs no code::

    DIR/open_clip_config.json        {"model_cfg": {...}, "preprocess_cfg": {...}}
    DIR/open_clip_model.safetensors  (or open_clip_pytorch_model.bin) the CLIP state dict
    DIR/tokenizer.json ...           only when text_cfg names an hf_tokenizer_name

Texts longer than the model's context are rejected (``RequestError`` naming the field), not
truncated; images are decoded with ``encoders.image_io`` (same limits and errors as chat). Forward
passes run in chunks of ``batch_size`` under ``torch.inference_mode``; vectors come back as float32 on
the CPU, re-normalised after the cast so a reduced-precision tower still yields unit vectors.

Thread-safe: every tokenizer call holds one lock. A Hugging Face fast tokenizer keeps its padding
setting on the shared Rust tokenizer, so without it a token count in one thread stripped the padding
of a batch in another (seen through Serve: 32 concurrent requests, "size of tensor a (5) must match").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from triptych.config import Limits
from triptych.errors import RequestError
from triptych.types import EmbedderInfo

from .image_io import load_image
from .vision_tower import weights_revision

CONFIG_FILE = "open_clip_config.json"


class ClipEmbedder:
    """An open_clip CLIP behind ``embed_texts`` / ``embed_images`` (see ``encoders.protocol``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Any,
        tokenizer: Any,
        info: EmbedderInfo,
        device: str | torch.device = "cpu",
        limits: Limits | None = None,
        batch_size: int = 64,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._preprocess = preprocess  # PIL image -> (3, H, W) normalised pixels
        self._tokenizer = tokenizer  # list[str] -> (N, context_length) token ids
        self._tokenizer_lock = threading.Lock()
        self._info = info
        self._limits = limits or Limits()
        self.batch_size = batch_size

    @classmethod
    def from_dir(
        cls, model_dir: Path | str, device: str = "cpu", limits: Limits | None = None, batch_size: int = 64
    ) -> ClipEmbedder:
        """Load an open_clip ``local-dir`` checkpoint with open_clip's own loaders (eval, float32)."""
        import open_clip

        model_dir = Path(model_dir)
        config_path = model_dir / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{model_dir}: not an open_clip model directory (no {CONFIG_FILE})")
        config = json.loads(config_path.read_text())
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}", device="cpu")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
        grid = getattr(model.visual, "grid_size", None)  # (h, w) patches of a ViT; None for other towers
        info = EmbedderInfo(
            model_id=model_dir.resolve().name,
            revision=weights_revision(sorted(p for p in model_dir.iterdir() if p.is_file()
                                             and not p.name.startswith("."))),
            dimensions=int(config["model_cfg"]["embed_dim"]),
            context_length=int(tokenizer.context_length),
            image_tokens=int(grid[0] * grid[1]) if grid else 0,
            preprocess={"image": config.get("preprocess_cfg", {}), "dtype": "float32"},
        )  # fmt: skip
        return cls(model, preprocess, tokenizer, info, device=device, limits=limits, batch_size=batch_size)

    def info(self) -> EmbedderInfo:
        """Model id, revision, dimensions, context length, image tokens and preprocessing (cache keys)."""
        return self._info

    def count_tokens(self, texts: Sequence[str], fields: Sequence[str] | None = None) -> list[int]:
        """Tokens of each text, special tokens included; RequestError naming the field for a text that
        is not a string, is empty, or is longer than the context (rejected, not truncated)."""
        counts = []
        for field, text in zip(_fields(fields, "texts", len(texts)), texts):
            if not isinstance(text, str):
                raise RequestError(field, f"must be a string, got {type(text).__name__}")
            if not text.strip():
                raise RequestError(field, "must not be empty")
            with self._tokenizer_lock:
                count = _token_count(self._tokenizer, text)
            if count > self._info.context_length:
                raise RequestError(field, f"is {count} tokens; {self._info.model_id!r} takes at most "
                                          f"{self._info.context_length} (longer texts are rejected, not truncated)")
            counts.append(count)
        return counts

    def decode_images(self, images: Sequence[bytes], fields: Sequence[str] | None = None) -> list[Image.Image]:
        """Image file bytes -> RGB images, with ``encoders.image_io``'s checks (RequestError naming the field)."""
        limits = self._limits
        return [load_image(data, field, limits.max_image_pixels, limits.max_image_bytes)
                for field, data in zip(_fields(fields, "images", len(images)), images)]  # fmt: skip

    def embed_texts(self, texts: Sequence[str], fields: Sequence[str] | None = None) -> torch.Tensor:
        """(N, D) float32 unit vectors of the texts, in order."""
        self.count_tokens(texts, fields)
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            with self._tokenizer_lock:
                ids = self._tokenizer(list(texts[start : start + self.batch_size]))  # (B, context_length)
            with torch.inference_mode():
                chunks.append(self.model.encode_text(ids.to(self.device)))  # (B, D)
        return _unit(chunks, len(texts), self._info.dimensions)

    def embed_images(self, images: Sequence[bytes], fields: Sequence[str] | None = None) -> torch.Tensor:
        """(N, D) float32 unit vectors of the images (file bytes), in order."""
        return self.embed_decoded(self.decode_images(images, fields))

    def embed_decoded(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, D) float32 unit vectors of already decoded RGB images (``decode_images``)."""
        chunks = []
        for start in range(0, len(images), self.batch_size):
            pixels = torch.stack([self._preprocess(im) for im in images[start : start + self.batch_size]])
            with torch.inference_mode():
                chunks.append(self.model.encode_image(pixels.to(self.device)))  # (B, 3, H, W) -> (B, D)
        return _unit(chunks, len(images), self._info.dimensions)


def _unit(chunks: list[torch.Tensor], n: int, dimensions: int) -> torch.Tensor:
    """Concatenated (N, D) float32 CPU vectors, each scaled to length 1."""
    if n == 0:
        return torch.empty(0, dimensions)
    return F.normalize(torch.cat(chunks).float(), dim=-1).cpu()


def _fields(fields: Sequence[str] | None, name: str, n: int) -> Sequence[str]:
    """The request field of each input (for errors): given, or ``name[i]``."""
    if fields is None:
        return [f"{name}[{i}]" for i in range(n)]
    if len(fields) != n:
        raise ValueError(f"{len(fields)} field names for {n} inputs")
    return fields


def _token_count(tokenizer: Any, text: str) -> int:
    """Tokens ``tokenizer`` makes of ``text`` before padding or truncation, special tokens included."""
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None:  # open_clip's HFTokenizer: the HF tokenizer's post-processor adds the specials
        return len(hf(tokenizer.clean_fn(text)).input_ids)
    return len(tokenizer.encode(text)) + 2  # SimpleTokenizer: <start_of_text> + BPE tokens + <end_of_text>
