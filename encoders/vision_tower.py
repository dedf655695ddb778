"""The VisionTower protocol every encoder backend implements, plus two helpers the backends share.

A tower turns preprocessed pixels into what the LLM consumes (projected patch tokens) together with
the [CLS] attention that visual-token pruning ranks patches by (FasterVLM / VisionZip, see
TECHNIQUES.md): the attention weights of the [CLS] query over the N patch keys in the vision block
whose output the VLM consumes, softmax over all keys ([CLS] included), averaged over heads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image


@runtime_checkable
class VisionTower(Protocol):
    """An ``nn.Module``-like vision tower + multimodal projector.

    Attributes:
        num_patches: N, the number of patch tokens per image (fixed by the preprocessing size).
        fingerprint: JSON-able dict identifying everything that changes the output for given image
            bytes: ``model_id``, ``revision`` (short sha256 of the weights), ``preprocess`` config
            (size, mean, std, resize mode, ...). Used in embedding-cache keys.
    """

    num_patches: int
    fingerprint: dict[str, Any]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised pixel tensor ``(3, H, W)`` float32."""
        ...

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` -> (tokens ``(B, N, D_lm)``, cls_attention ``(B, N)``); call as ``tower(x)``.

        tokens: projected patch tokens, [CLS] dropped, row-major spatial order.
        cls_attention: [CLS]->patch attention of the consumed block, mean over heads (float32).
        """
        ...

    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def eval(self) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterable[torch.nn.Parameter]: ...


def cls_attention_from_qk(q_cls: torch.Tensor, k: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    """Exact [CLS] attention over patches, recomputed from projected queries and keys.

    q_cls: ``(B, D)`` query of the [CLS] token (position 0); k: ``(B, L, D)`` keys of all L = 1 + N
    tokens. Softmax runs over all L keys like the model's own attention; the [CLS] column is then
    dropped, so a row sums to 1 - attention([CLS] -> [CLS]). Returns ``(B, N)`` float32.
    """
    B, L, D = k.shape
    head_dim = D // num_heads
    q = q_cls.float().reshape(B, num_heads, 1, head_dim)  # (B, H, 1, hd)
    k = k.float().reshape(B, L, num_heads, head_dim).transpose(1, 2)  # (B, H, L, hd)
    logits = (q * scale) @ k.transpose(-1, -2)  # (B, H, 1, L)
    weights = logits.softmax(dim=-1)[:, :, 0, 1:]  # (B, H, N)
    return weights.mean(dim=1)  # (B, N)


def weights_revision(paths: Iterable[Path], length: int = 16) -> str:
    """Short sha256 over the bytes of the given weight files (in the given order), for cache keys."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(8 * 2**20):
                digest.update(chunk)
    return digest.hexdigest()[:length]
