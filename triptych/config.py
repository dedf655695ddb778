"""Typed configuration of a Triptych deployment (pydantic): models, ports, replicas, limits, cache.

`TriptychConfig` is what a Serve config file's `applications[].args` hold; `load_config` validates such
a mapping and reports every problem with its key path (`llm_decoder.max_replicas: must be >= ...`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

DEFAULT_MODEL_DIR = Path.home() / ".cache" / "triptych" / "models"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeploymentOptions(_Frozen):
    """Replica count, CPU share, autoscaling and backpressure of one Serve deployment."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    num_cpus: float = Field(0.25, gt=0)
    num_gpus: float = Field(0.0, ge=0)  # a share of one GPU (e.g. 0.25) or whole GPUs
    resources: dict[str, float] = Field(default_factory=dict)  # custom node resources that pin the stage
    max_ongoing_requests: int = Field(8, ge=1)
    max_queued_requests: int = Field(16, ge=-1)  # -1 = unbounded (Serve's default)
    torch_threads: int | None = Field(None, ge=1)  # None: Ray's default (1 thread for fractional CPUs)
    # Serve's autoscaling knobs; None keeps Serve's production defaults (10 s, 30 s, 30 s, 600 s).
    metrics_interval_s: float | None = Field(None, gt=0)
    look_back_period_s: float | None = Field(None, gt=0)
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)
    # How long a replica being replaced (rolling update, scale-down, shutdown) may finish what it holds
    # before Serve kills it; None keeps Serve's 20 s.
    graceful_shutdown_timeout_s: float | None = Field(None, ge=0)

    @field_validator("max_replicas")
    @classmethod
    def _at_least_min(cls, value: int, info: ValidationInfo) -> int:
        minimum = info.data.get("min_replicas")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= min_replicas ({minimum}), got {value}")
        return value

    @property
    def device(self) -> str:
        """Where the stage's engine runs: the GPU share Ray gives a replica with num_gpus > 0, else the CPU."""
        return "cuda" if self.num_gpus > 0 else "cpu"

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options(...)`."""
        actor_options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor_options["num_gpus"] = self.num_gpus
        if self.resources:
            actor_options["resources"] = dict(self.resources)
        if self.torch_threads is not None:
            threads = str(self.torch_threads)
            actor_options["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}}
        options: dict[str, Any] = {
            "ray_actor_options": actor_options,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }
        if self.graceful_shutdown_timeout_s is not None:
            options["graceful_shutdown_timeout_s"] = self.graceful_shutdown_timeout_s
        if self.max_replicas > max(self.min_replicas, 1):
            knobs = ("metrics_interval_s", "look_back_period_s", "upscale_delay_s", "downscale_delay_s")
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                **{knob: getattr(self, knob) for knob in knobs if getattr(self, knob) is not None},
            }
        else:
            options["num_replicas"] = max(self.min_replicas, 1)
        return options


class BatchOptions(_Frozen):
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)


class DecoderBatching(_Frozen):
    """Continuous batching in each LLMDecoder replica (`decoders.batching.BatchingConfig`)."""

    # 16: through Serve on `bench`, 16 users get 3.26x the tokens/s of one (8 gave 1.75x: half waited; README)
    max_batch_size: int = Field(16, ge=1)  # sequences decoding together; each owns one KV slot
    # Token budget of one engine step (decode rows + prefill chunks); None: whole prompts at once.
    max_tokens_per_step: int | None = Field(256, ge=2)
    max_waiting: int = Field(8, ge=0)  # queued in the engine beyond the batch; past it: 503
    max_seq_len: int | None = Field(None, ge=1)  # positions per KV slot; None: the model's context

    @field_validator("max_tokens_per_step")
    @classmethod
    def _room_for_prefill(cls, value: int | None, info: ValidationInfo) -> int | None:
        batch = info.data.get("max_batch_size")
        if value is not None and batch is not None and value <= batch:
            raise ValueError(f"must exceed max_batch_size ({batch}) so prefill gets part of each step, got {value}")
        return value


class Limits(_Frozen):
    """Edge validation limits."""

    max_images_per_request: int = Field(4, ge=1)
    max_image_pixels: int = Field(4_000_000, ge=1)  # far below Pillow's ~89 MP bomb threshold
    max_image_bytes: int = Field(20 * 2**20, ge=1)
    max_tokens: int = Field(1024, ge=1)  # upper bound accepted for a request's max_tokens
    # A whole HTTP body / gRPC message, refused (413 / RESOURCE_EXHAUSTED) before it is parsed: one image
    # of max_image_bytes as base64 (4/3 of 20 MiB = 26.7 MiB) plus 5 MiB of text and JSON fits.
    max_request_bytes: int = Field(32 * 2**20, ge=1)
    max_messages: int = Field(128, ge=1)  # chat messages in one request
    max_content_parts: int = Field(64, ge=1)  # content parts in one chat message
    # Characters of text: a chat request's text parts together; an image request's prompt, and its
    # negative prompt, each. Checked before any tokenizer sees the text.
    max_prompt_chars: int = Field(100_000, ge=1)
    max_embedding_inputs: int = Field(256, ge=1)  # items (texts + images) in one embeddings request


class AuthOptions(_Frozen):
    """API keys (`triptych.auth`): TRIPTYCH_API_KEYS in the ingress's environment and/or this file, one key
    per line, read when an ingress replica starts. No key from either: authentication is off."""

    api_keys_file: Path | None = None


class ChatDefaults(_Frozen):
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    # Keep half the visual tokens by [CLS] attention: 95.5% of the unpruned toy-VLM accuracy (retrained weights), 2.2x
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
    # None = the application runs an embedded Redis (the `CacheServer` deployment, loopback only);
    # a cluster sets an external Redis that every node reaches (README: running on a cluster).
    redis_url: str | None = None
    enabled: bool = True
    ttl_s: int = Field(3600, ge=1)
    socket_timeout_s: float = Field(0.25, gt=0)
    embedded_maxmemory_mb: int = Field(256, ge=1)


class FaultInjection(_Frozen):
    """Test-only faults, off by default (`tests/test_chaos.py`); each is inert unless set.

    gate_file: where gated work waits: until this file exists (a test removes it to close the gate and
        writes it to open it), or until the request is cancelled.
    gate_encoder: every VisionEncoder call waits at the gate (so requests pile up behind one encode).
    gate_seed: a chat or image request with this seed waits at the gate after its first event: the
        decoder after its first text, the denoiser inside its first step (its loop is held there).
    fail_seed: a chat or image request with this seed fails right after its first streamed event (the
        decoder's first text, the denoiser's first step): a failure after the first byte.
    """

    gate_file: str | None = None
    gate_encoder: bool = False
    gate_seed: int | None = None
    fail_seed: int | None = None


class TriptychConfig(_Frozen):
    """Everything the application builder needs; defaults come from the environment."""

    profile: str = Field(default_factory=lambda: os.environ.get("TRIPTYCH_PROFILE", "toy"))
    model_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("TRIPTYCH_MODEL_DIR", DEFAULT_MODEL_DIR))
    )
    chat_model: str | None = None  # a model name in model_dir or a path; None = the profile's
    image_model: str | None = None  # likewise for text-to-image
    embedding_model: str | None = None  # likewise for joint image-text embeddings (an open_clip directory)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 9000
    request_timeout_s: float | None = Field(600.0, gt=0)  # past it: HTTP 408 / gRPC DEADLINE_EXCEEDED
    # User workflow files (*.yaml) loaded beside the built-ins at start-up (pipelines.workflow.load).
    workflows_dir: Path | None = Field(
        default_factory=lambda: Path(os.environ["TRIPTYCH_WORKFLOWS_DIR"])
        if os.environ.get("TRIPTYCH_WORKFLOWS_DIR") else None
    )
    workflow_timeout_s: float | None = Field(None, gt=0)  # one workflow run; None: request_timeout_s applies
    # Room for every chat and image the stages hold (deployments.admission refuses the rest at once) and more.
    # A replaced ingress replica waits up to 120 s for its requests, which may wait for a stage being replaced
    # too: Serve's rolling update stops a one-replica stage's old replica before the new one is up, and the
    # new one took 63 s to start on a loaded 2-core box (Serve's 20 s, then 60 s, killed chats: HTTP 500).
    # Two replicas per stage avoid the gap (one is replaced at a time).
    ingress: DeploymentOptions = DeploymentOptions(num_cpus=0.1, max_ongoing_requests=128, max_queued_requests=64,
                                                   graceful_shutdown_timeout_s=120)
    vision_encoder: DeploymentOptions = DeploymentOptions(max_replicas=2)
    # max_ongoing_requests = decoder_batching.max_batch_size + max_waiting: Serve hands the engine
    # what it can batch or queue; beyond that Serve's own queue and then 503. The queue is at least as big, so
    # the 24 chats the edge admits for it (deployments.admission) pass even when they arrive together.
    llm_decoder: DeploymentOptions = DeploymentOptions(max_replicas=2, max_ongoing_requests=24, max_queued_requests=32)
    decoder_batching: DecoderBatching = DecoderBatching()
    text_encoder: DeploymentOptions = DeploymentOptions(num_cpus=0.1)
    denoiser: DeploymentOptions = DeploymentOptions(max_replicas=2, max_ongoing_requests=8)
    # Room for a burst: the router's queue also holds calls still being placed on a replica, so a queue of 16
    # dropped one of 32 simultaneous one-text requests (benchmarks.embeddings) although 64 could run.
    embedder: DeploymentOptions = DeploymentOptions(max_replicas=2, max_ongoing_requests=32, max_queued_requests=64)
    encoder_batch: BatchOptions = BatchOptions()
    denoiser_batch: BatchOptions = BatchOptions(max_batch_size=4, batch_wait_timeout_s=0.02)
    embedder_batch: BatchOptions = BatchOptions(max_batch_size=32)  # calls merged into one forward per kind
    limits: Limits = Limits()
    faults: FaultInjection = FaultInjection()
    auth: AuthOptions = AuthOptions()
    chat: ChatDefaults = ChatDefaults()
    images: ImageDefaults = ImageDefaults()
    cache: CacheOptions = Field(
        default_factory=lambda: CacheOptions(redis_url=os.environ.get("REDIS_URL") or None)
    )


class ConfigError(ValueError):
    """A Triptych configuration is invalid; `problems` holds one "key.path: what is wrong" line each."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(f"invalid Triptych configuration in {source}:\n" + "\n".join(f"  {p}" for p in problems))
        self.source = source
        self.problems = problems

    def __reduce__(self):  # keep the fields when Ray pickles the exception across processes
        return (type(self), (self.source, self.problems))


def load_config(args: Mapping[str, Any] | None, source: str = "args") -> TriptychConfig:
    """Validate a mapping (a Serve config file's `applications[].args`) into a `TriptychConfig`.

    Raises ConfigError listing every problem with its key path, e.g.
    ``llm_decoder.max_replicas: must be >= min_replicas (2), got 1`` or ``ingress.foo: unknown key``.
    """
    try:
        return TriptychConfig.model_validate(dict(args or {}))
    except ValidationError as exc:
        raise ConfigError(source, [validation_problem(error) for error in exc.errors()]) from None


def validation_problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as "key.path: what is wrong"."""
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing" or "got" in message:
        return f"{path}: {message}"
    got = repr(error.get("input"))
    return f"{path}: {message} (got {got if len(got) <= 60 else got[:57] + '...'})"
