"""What operations run over: the stage pipelines (behind Protocols, never Serve) and server defaults.

The ingress builds one ``OpContext`` from its stage clients; tests build one from in-process stages
or fakes. A stage left as None is one this server does not have: an op that needs it fails its step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cache import EmbeddingCache
from pipelines.chat import ChatPipeline
from pipelines.embeddings import EmbeddingPipeline
from pipelines.stages import TextEncoderStage, VisionStage
from pipelines.text_to_image import TextToImagePipeline
from triptych.config import ChatDefaults, ImageDefaults, Limits


@dataclass(frozen=True)
class OpContext:
    chat: ChatPipeline | None = None
    text_to_image: TextToImagePipeline | None = None
    embeddings: EmbeddingPipeline | None = None
    vision: VisionStage | None = None  # encode_image (with `cache`)
    text_encoder: TextEncoderStage | None = None  # encode_text (with `cache`)
    cache: EmbeddingCache | None = None
    chat_defaults: ChatDefaults = field(default_factory=ChatDefaults)
    image_defaults: ImageDefaults = field(default_factory=ImageDefaults)
    limits: Limits = field(default_factory=Limits)

    def need(self, name: str) -> Any:
        """The stage ``name`` or a clear error when this server has none."""
        stage = getattr(self, name)
        if stage is None:
            raise RuntimeError(f"this server has no {name} stage")
        return stage
