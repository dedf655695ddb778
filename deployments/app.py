"""The one place the Serve topology is written: config -> Application (ingress + stage deployments)."""

from __future__ import annotations

from pathlib import Path

from ray.serve import Application

from deployments.denoiser import Denoiser
from deployments.ingress import TriptychIngress
from deployments.llm_decoder import LLMDecoder
from deployments.text_encoder import TextEncoder
from deployments.vision_encoder import VisionEncoder
from triptych.config import TriptychConfig


def build_app(
    config: TriptychConfig, chat_model_path: Path, image_model_path: Path, redis_url: str | None
) -> Application:
    """Each stage is its own deployment with its own replicas, CPU share and autoscaling."""
    vision_encoder = VisionEncoder.options(**config.vision_encoder.serve_options()).bind(
        str(chat_model_path), config.encoder_batch, config.limits
    )
    llm_decoder = LLMDecoder.options(**config.llm_decoder.serve_options()).bind(str(chat_model_path))
    text_encoder = TextEncoder.options(**config.text_encoder.serve_options()).bind(str(image_model_path))
    denoiser = Denoiser.options(**config.denoiser.serve_options()).bind(
        str(image_model_path), config.denoiser_batch, config.images.max_size
    )
    return TriptychIngress.options(**config.ingress.serve_options()).bind(
        vision_encoder, llm_decoder, text_encoder, denoiser, config, str(chat_model_path),
        str(image_model_path), redis_url,
    )
