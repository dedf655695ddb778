"""Starts and stops a running Triptych: Redis (embedded unless REDIS_URL), Ray, Serve (HTTP + gRPC)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from triptych.config import TriptychConfig

APP_NAME = "triptych"
GRPC_SERVICERS = [
    "triptych.v1.triptych_pb2_grpc.add_TriptychServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]
RUNTIME_ENV_VARS = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass(frozen=True)
class RunningServer:
    config: TriptychConfig
    chat_model_path: Path
    image_model_path: Path
    redis_url: str | None
    http_url: str
    grpc_target: str

    def ingress_handle(self):
        from ray import serve

        return serve.get_app_handle(APP_NAME)

    def deployment_handle(self, name: str):
        from ray import serve

        return serve.get_deployment_handle(name, app_name=APP_NAME)


@contextmanager
def serving(config: TriptychConfig, quiet: bool = False):
    """Run Triptych until the block exits; everything started here is stopped afterwards."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for key, value in RUNTIME_ENV_VARS.items():
        os.environ.setdefault(key, value)
    import ray
    from ray import serve
    from ray.serve.config import HTTPOptions, gRPCOptions

    from cache import EmbeddedRedis
    from deployments.app import build_app
    from models.profiles import resolve_chat_model, resolve_image_model

    if quiet:
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    chat_model_path = resolve_chat_model(config.profile, config.model_dir, config.chat_model)
    image_model_path = resolve_image_model(config.profile, config.model_dir, config.image_model)
    embedded = None
    redis_url = config.cache.redis_url
    if config.cache.enabled and redis_url is None:
        embedded = EmbeddedRedis(maxmemory_mb=config.cache.embedded_maxmemory_mb)
        embedded.start()
        redis_url = embedded.url
    started_ray = not ray.is_initialized()
    try:
        if started_ray:
            ray.init(
                include_dashboard=False,
                log_to_driver=not quiet,
                logging_level=logging.WARNING if quiet else logging.INFO,
                runtime_env={"env_vars": RUNTIME_ENV_VARS},
            )
        serve.start(
            http_options=HTTPOptions(
                host=config.http_host, port=config.http_port, request_timeout_s=config.request_timeout_s
            ),
            grpc_options=gRPCOptions(
                port=config.grpc_port,
                grpc_servicer_functions=GRPC_SERVICERS,
                request_timeout_s=config.request_timeout_s,
            ),
            logging_config={"log_level": "WARNING"} if quiet else None,
        )
        serve.run(build_app(config, chat_model_path, image_model_path, redis_url), name=APP_NAME, route_prefix="/")
        yield RunningServer(
            config=config,
            chat_model_path=chat_model_path,
            image_model_path=image_model_path,
            redis_url=redis_url,
            http_url=f"http://{config.http_host}:{config.http_port}",
            grpc_target=f"127.0.0.1:{config.grpc_port}",
        )
    finally:
        try:
            serve.shutdown()
        finally:
            if started_ray:
                ray.shutdown()
            if embedded is not None:
                embedded.stop()
