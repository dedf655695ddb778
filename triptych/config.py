"""Typed configuration of a Triptych deployment (pydantic): models, ports, replicas, limits, cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MODEL_DIR = Path.home() / ".cache" / "triptych" / "models"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeploymentOptions(_Frozen):
    """Replica count, CPU share, autoscaling and backpressure of one Serve deployment."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    num_cpus: float = Field(0.25, gt=0)
    max_ongoing_requests: int = Field(8, ge=1)
    max_queued_requests: int = Field(16, ge=-1)  # -1 = unbounded (Serve's default)
    torch_threads: int | None = Field(None, ge=1)  # None: Ray's default (1 thread for fractional CPUs)

    @model_validator(mode="after")
    def _check_replicas(self) -> DeploymentOptions:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options(...)`."""
        actor_options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.torch_threads is not None:
            threads = str(self.torch_threads)
            actor_options["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}}
        options: dict[str, Any] = {
            "ray_actor_options": actor_options,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }
        if self.max_replicas > max(self.min_replicas, 1):
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = max(self.min_replicas, 1)
        return options


class BatchOptions(_Frozen):
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)


class Limits(_Frozen):
    """Edge validation limits."""

    max_images_per_request: int = Field(4, ge=1)
    max_image_pixels: int = Field(4_000_000, ge=1)  # far below Pillow's ~89 MP bomb threshold
    max_image_bytes: int = Field(20 * 2**20, ge=1)
    max_tokens: int = Field(1024, ge=1)  # upper bound accepted for a request's max_tokens


class ChatDefaults(_Frozen):
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    # Keep half the visual tokens by [CLS] attention: 98% of the unpruned toy-VLM accuracy, 2.2x
    # faster prefill on `bench` (README, benchmarks.efficiency). "none" / 1.0 turn it off.
    pruning_method: str = "cls_attention"
    visual_token_keep_ratio: float = Field(0.5, gt=0, le=1)


class ImageDefaults(_Frozen):
    """Text-to-image defaults: a few-step sampler (see README's benchmark for why)."""

    width: int = Field(64, ge=8)
    height: int = Field(64, ge=8)
    max_size: int = Field(512, ge=8)  # largest width / height accepted
    steps: int = Field(8, ge=1)
    sampler: str = "dpmpp_2m"
    guidance_scale: float = Field(5.0, ge=0)
    # DeepCache: full U-Net every 3rd step. On toy-sd at 8 dpmpp_2m steps: 1.90x faster denoising,
    # oracle 90% vs 92% uncached (README, benchmarks.efficiency); 1 turns it off.
    cache_interval: int = Field(3, ge=1)


class CacheOptions(_Frozen):
    redis_url: str | None = None  # None = an embedded Redis started by `triptych serve`
    enabled: bool = True
    ttl_s: int = Field(3600, ge=1)
    socket_timeout_s: float = Field(0.25, gt=0)
    embedded_maxmemory_mb: int = Field(256, ge=1)


class TriptychConfig(_Frozen):
    """Everything the application builder needs; defaults come from the environment."""

    profile: str = Field(default_factory=lambda: os.environ.get("TRIPTYCH_PROFILE", "toy"))
    model_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("TRIPTYCH_MODEL_DIR", DEFAULT_MODEL_DIR))
    )
    chat_model: str | None = None  # a model name in model_dir or a path; None = the profile's
    image_model: str | None = None  # likewise for text-to-image
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 9000
    request_timeout_s: float | None = Field(600.0, gt=0)  # past it: HTTP 408 / gRPC DEADLINE_EXCEEDED
    ingress: DeploymentOptions = DeploymentOptions(num_cpus=0.1, max_ongoing_requests=32, max_queued_requests=64)
    vision_encoder: DeploymentOptions = DeploymentOptions(max_replicas=2)
    llm_decoder: DeploymentOptions = DeploymentOptions(max_replicas=2, max_ongoing_requests=4)
    text_encoder: DeploymentOptions = DeploymentOptions(num_cpus=0.1)
    denoiser: DeploymentOptions = DeploymentOptions(max_replicas=2, max_ongoing_requests=8)
    encoder_batch: BatchOptions = BatchOptions()
    denoiser_batch: BatchOptions = BatchOptions(max_batch_size=4, batch_wait_timeout_s=0.02)
    limits: Limits = Limits()
    chat: ChatDefaults = ChatDefaults()
    images: ImageDefaults = ImageDefaults()
    cache: CacheOptions = Field(
        default_factory=lambda: CacheOptions(redis_url=os.environ.get("REDIS_URL") or None)
    )
