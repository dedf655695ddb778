"""The one place the Serve topology is written: a typed config -> Application (ingress + stage deployments).

`app_builder` is what a Serve config file's `import_path` names (`deployments.app:app_builder`, Serve's
`app_builder(args)` convention): `args` are Triptych's config (`TriptychConfig`), validated with every
problem named by its key path before any replica starts. The same function serves `serve run`,
`serve deploy` and `triptych serve`. Per-deployment options in the file's `deployments:` list (named
`TriptychIngress`, `VisionEncoder`, `LLMDecoder`, `TextEncoder`, `Denoiser`, `Embedder`, `CacheServer`)
override the typed defaults set here, as Serve documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from deployments.cache_server import CacheServer
from deployments.denoiser import Denoiser
from deployments.embedder import Embedder
from deployments.ingress import TriptychIngress
from deployments.llm_decoder import LLMDecoder
from deployments.serve_config import check_defaults
from deployments.text_encoder import TextEncoder
from deployments.vision_encoder import VisionEncoder
from models.profiles import resolve_chat_model, resolve_embedding_model, resolve_image_model
from pipelines.workflow import load_workflows
from triptych.config import TriptychConfig, load_config


def app_builder(args: Mapping[str, Any] | None = None) -> Application:
    """Serve's builder entry point: config-file `args` -> the Triptych application."""
    config = load_config(args, source="the application's args")
    check_defaults(config, source="the application's args")
    return build_app(config)


def build_app(config: TriptychConfig) -> Application:
    """Each stage is its own deployment with its own replicas, CPU/GPU share, resources and autoscaling.

    Resolves the model profile (creating generated checkpoints on first use) and the cache: an external
    Redis when `cache.redis_url` is set, else the application's own `CacheServer`. Loads the workflows
    (built-ins + `workflows_dir`) here, so a bad workflow file stops the start-up with every problem
    (`WorkflowFileError`) before any replica starts, and the ingress gets them as data.
    """
    workflows = load_workflows(config.workflows_dir)
    chat_model = str(resolve_chat_model(config.profile, config.model_dir, config.chat_model))
    image_model = str(resolve_image_model(config.profile, config.model_dir, config.image_model))
    embedding_model = str(resolve_embedding_model(config.profile, config.model_dir, config.embedding_model))
    cache_server = None
    if config.cache.enabled and config.cache.redis_url is None:
        cache_server = CacheServer.bind(config.cache.embedded_maxmemory_mb)
    vision_encoder = VisionEncoder.options(**config.vision_encoder.serve_options()).bind(
        chat_model, config.encoder_batch, config.limits, config.vision_encoder.device, faults=config.faults
    )
    llm_decoder = LLMDecoder.options(**config.llm_decoder.serve_options()).bind(
        chat_model, config.decoder_batching, config.cache, cache_server, config.llm_decoder.device, faults=config.faults
    )
    text_encoder = TextEncoder.options(**config.text_encoder.serve_options()).bind(
        image_model, config.text_encoder.device
    )
    denoiser = Denoiser.options(**config.denoiser.serve_options()).bind(
        image_model, config.denoiser_batch, config.images.max_size, config.denoiser.device, faults=config.faults
    )
    embedder = Embedder.options(**config.embedder.serve_options()).bind(
        embedding_model, config.embedder_batch, config.limits, config.embedder.device
    )
    return TriptychIngress.options(**config.ingress.serve_options()).bind(
        vision_encoder, llm_decoder, text_encoder, denoiser, config, chat_model, image_model, cache_server,
        embedder, embedding_model, workflows,
    )
