"""VisionTower over the vision tower + multimodal projector of a transformers ``LlavaModel``.

Tokens come from Llava's own ``get_image_features`` (so ``vision_feature_layer`` and
``vision_feature_select_strategy="default"`` are honoured exactly as Llava does). The [CLS]
attention is taken from the encoder layer whose output that feature layer is: a forward pre-hook
captures that layer's attention input and the query/key projections are re-applied for the [CLS]
row only. This equals ``output_attentions=True`` with eager attention (a test checks it) without
materialising every layer's (B, H, L, L) weights or forcing eager attention on all layers.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from PIL import Image
from torch import nn

from .vision_tower import cls_attention_from_qk


class HFLlavaTower(nn.Module):
    """Wraps a ``LlavaModel`` whose language model may already have been removed."""

    def __init__(self, llava_model: nn.Module, image_processor: Any, model_id: str, revision: str):
        super().__init__()
        config = llava_model.config
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise TypeError(f"vision_feature_layer must be one int for [CLS] attention, got {layer!r}")
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                "vision_feature_select_strategy must be 'default' ([CLS] dropped), "
                f"got {config.vision_feature_select_strategy!r}"
            )
        self.llava = llava_model
        self.image_processor = image_processor

        layers = _encoder_layers(llava_model.vision_tower)
        # index into hidden_states = (embeddings, output of layer 0, ..., output of layer L-1)
        hidden_index = layer if layer >= 0 else len(layers) + 1 + layer
        if not 1 <= hidden_index <= len(layers):
            raise ValueError(f"vision_feature_layer {layer} does not select the output of an encoder layer")
        self.feature_layer_index = hidden_index - 1  # encoder layer whose output the VLM consumes
        self._attn = layers[self.feature_layer_index].self_attn
        self._captured = threading.local()
        self._attn.register_forward_pre_hook(self._capture_attention_input, with_kwargs=True)

        vision_config = config.vision_config
        grid = vision_config.image_size // vision_config.patch_size
        self.num_patches = grid * grid
        self.fingerprint = {
            "model_id": model_id,
            "revision": revision,
            "tower": "hf_llava",
            "vision_feature_layer": layer,
            "preprocess": _processor_summary(image_processor),
        }

    def _capture_attention_input(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        self._captured.x = hidden  # (B, L, D_v) after layer_norm1 of the consumed layer

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> ``(3, H, W)`` float32 with the checkpoint's own image processor."""
        return self.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._captured.x = None
        out = self.llava.get_image_features(pixel_values=pixel_values, return_dict=True)
        tokens = torch.stack(list(out.pooler_output))  # (B, N, D_lm)
        x = self._captured.x  # (B, L, D_v)
        self._captured.x = None
        attn = self._attn
        q_cls = attn.q_proj(x[:, 0])  # (B, D_v)
        k = attn.k_proj(x)  # (B, L, D_v)
        return tokens, cls_attention_from_qk(q_cls, k, attn.num_heads, attn.scale)


def _encoder_layers(vision_tower: nn.Module) -> nn.ModuleList:
    for owner in (vision_tower, getattr(vision_tower, "vision_model", None)):
        encoder = getattr(owner, "encoder", None)
        if encoder is not None and hasattr(encoder, "layers"):
            return encoder.layers
    raise ValueError(f"unsupported Llava vision tower {type(vision_tower).__name__}: no encoder.layers")


def _processor_summary(image_processor: Any) -> dict[str, Any]:
    """The preprocessing settings that change pixel values, JSON-able, for cache keys."""
    cfg = image_processor.to_dict()
    keep = (
        "image_processor_type", "do_resize", "size", "resample", "do_center_crop", "crop_size",
        "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std", "do_pad",
        "do_convert_rgb",
    )  # fmt: skip
    return {k: _jsonable(cfg[k]) for k in keep if k in cfg}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
