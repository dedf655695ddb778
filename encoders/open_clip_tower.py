"""VisionTower over an open_clip VisionTransformer plus a LLaVA-style MLP projector.

The VLM consumes the last block's tokens after ``ln_post`` with [CLS] dropped (open_clip's
``output_tokens=True``), projected to the LLM width by Linear-GELU-Linear (LLaVA-1.5's
``mlp2x_gelu``). open_clip calls ``nn.MultiheadAttention`` with ``need_weights=False``, so the
[CLS] attention is recomputed exactly from the last block's attention input (captured by a forward
pre-hook) and its ``in_proj`` weights.
"""

from __future__ import annotations

import threading
from typing import Any

import open_clip
import torch
from open_clip.transformer import VisionTransformer
from PIL import Image
from torch import nn

from .vision_tower import cls_attention_from_qk


class ProjectorMLP(nn.Module):
    """Linear-GELU-Linear; parameter names match transformers' ``LlavaMultiModalProjector``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D_v) -> (B, N, D_lm)
        return self.linear_2(self.act(self.linear_1(x)))


class OpenClipTower(nn.Module):
    """open_clip ViT -> last block tokens (after ln_post, [CLS] dropped) -> projector."""

    def __init__(
        self,
        visual: VisionTransformer,
        projector: ProjectorMLP,
        preprocess_cfg: dict[str, Any],
        model_id: str,
        revision: str,
    ):
        super().__init__()
        _check_supported(visual)
        self.visual = visual
        self.projector = projector
        grid_h, grid_w = visual.grid_size
        self.num_patches = grid_h * grid_w
        self.preprocess_cfg = dict(preprocess_cfg)
        self._transform = open_clip.image_transform(
            self.preprocess_cfg["size"],
            is_train=False,
            mean=tuple(self.preprocess_cfg["mean"]),
            std=tuple(self.preprocess_cfg["std"]),
            resize_mode=self.preprocess_cfg["resize_mode"],
            interpolation=self.preprocess_cfg["interpolation"],
            fill_color=self.preprocess_cfg.get("fill_color", 0),
        )
        self.fingerprint = {
            "model_id": model_id,
            "revision": revision,
            "tower": "open_clip",
            "preprocess": self.preprocess_cfg,
        }
        # Input of the last block's attention, per thread (forwards may run in several threads).
        self._captured = threading.local()
        self._attn: nn.MultiheadAttention = visual.transformer.resblocks[-1].attn
        self._attn.register_forward_pre_hook(self._capture_attention_input, with_kwargs=True)

    def _capture_attention_input(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        query = args[0] if args else kwargs["query"]
        self._captured.x = query  # (B, L, D_v): ln_1(x) of the last block, L = 1 + N

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> ``(3, H, W)`` float32 with open_clip's eval transform."""
        return self._transform(image)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._captured.x = None
        _, patch_tokens = self.visual(pixel_values)  # (B, N, D_v) after ln_post, [CLS] dropped
        x = self._captured.x  # (B, L, D_v)
        self._captured.x = None
        tokens = self.projector(patch_tokens)  # (B, N, D_lm)
        return tokens, self._cls_attention(x)

    def _cls_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D_v) attention input -> (B, N) [CLS] attention, mean over heads."""
        attn = self._attn
        D = attn.embed_dim
        w_q, w_k = attn.in_proj_weight[:D], attn.in_proj_weight[D : 2 * D]  # (D, D) each
        b_q = attn.in_proj_bias[:D] if attn.in_proj_bias is not None else None
        b_k = attn.in_proj_bias[D : 2 * D] if attn.in_proj_bias is not None else None
        q_cls = nn.functional.linear(x[:, 0], w_q, b_q)  # (B, D)
        k = nn.functional.linear(x, w_k, b_k)  # (B, L, D)
        if attn.bias_k is not None:
            raise ValueError("open_clip attention with add_bias_kv is not supported")
        return cls_attention_from_qk(q_cls, k, attn.num_heads, attn.head_dim**-0.5)


def _check_supported(visual: nn.Module) -> None:
    """Reject open_clip vision configs whose tokens or attention this tower would get wrong."""
    if not isinstance(visual, VisionTransformer):
        raise TypeError(f"open_clip tower needs a VisionTransformer, got {type(visual).__name__}")
    if not visual.output_tokens:
        raise ValueError("open_clip VisionTransformer must be built with output_tokens=True")
    if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
        raise ValueError("open_clip tower supports pool_type 'tok'/'avg' without attentional pooling")
    attn = visual.transformer.resblocks[-1].attn
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or not attn.batch_first:
        raise ValueError("open_clip tower supports the default block (batch-first nn.MultiheadAttention)")
