"""Serve config files (Ray Serve's own format) for Triptych: load and validate one, or make one.

A file in `deploy/` is a `ServeDeploySchema` whose Triptych application has
`import_path: deployments.app:app_builder` and Triptych's config in `args`. `load_serve_config` checks
both layers before anything starts: Ray's schema first, then every Triptych application's `args`
(`TriptychConfig`), and reports every problem with its key path
(`applications[0].args.llm_decoder.max_replicas: must be >= min_replicas (2), got 1`).
`serve_config_for` turns a plain `TriptychConfig` (no file) into the equivalent config, so every way of
starting Triptych goes through the same path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from decoders.sampling import check_sampling_params
from denoisers.params import validate_image_params
from encoders.pruning import get_pruner
from triptych.config import ConfigError, TriptychConfig, load_config, validation_problem
from triptych.errors import RequestError
from triptych.types import ImageParams, SamplingParams

APP_NAME = "triptych"
BUILDER = "deployments.app:app_builder"
GRPC_SERVICERS = [
    "triptych.v1.triptych_pb2_grpc.add_TriptychServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]
RUNTIME_ENV_VARS = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# Serve's gRPC proxy reads its largest message (received and sent) from this variable (default 2 GiB);
# Serve has no gRPCOptions field for it, so it reaches the proxy through the controller's environment.
GRPC_MESSAGE_LIMIT_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"


def load_serve_config(path: Path | str) -> tuple[ServeDeploySchema, dict[str, TriptychConfig]]:
    """Read and validate a Serve config file: (Ray's schema, {app name: TriptychConfig}).

    Raises ConfigError naming the file and every bad key path; nothing is started.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from None
    return validate_serve_config(raw, str(path))


def validate_serve_config(
    raw: Any, source: str = "the Serve config"
) -> tuple[ServeDeploySchema, dict[str, TriptychConfig]]:
    """As `load_serve_config`, for an already parsed mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top level): must be a mapping with an `applications` list"])
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [validation_problem(error) for error in exc.errors()]) from None
    configs: dict[str, TriptychConfig] = {}
    problems: list[str] = []
    for index, app in enumerate(schema.applications):
        if app.import_path != BUILDER:
            continue
        try:
            configs[app.name] = load_config(app.args, source)
            check_defaults(configs[app.name], source)
        except ConfigError as exc:
            problems += [f"applications[{index}].args.{problem}" for problem in exc.problems]
    if problems:
        raise ConfigError(source, problems)
    if not configs:
        raise ConfigError(source, [f"applications: no application has import_path {BUILDER!r}"])
    return schema, configs


def check_defaults(config: TriptychConfig, source: str) -> None:
    """The server's request defaults obey the same rules as a request (else every request omitting the
    field would fail): ConfigError naming `chat.<field>` / `images.<field>`."""
    chat, images = config.chat, config.images
    checks = {
        "chat": lambda: (
            check_sampling_params(SamplingParams(chat.max_tokens, chat.temperature, chat.top_p),
                                  config.limits.max_tokens),
            get_pruner(chat.pruning_method),
        ),
        "images": lambda: validate_image_params(
            ImageParams(images.width, images.height, images.steps, images.sampler, images.guidance_scale,
                        seed=0, n=1, cache_interval=images.cache_interval),
            max_size=images.max_size,
        ),
    }
    problems = []
    for section, check in checks.items():
        try:
            check()
        except RequestError as exc:
            problems.append(f"{section}.{exc.field}: {exc.message}")
    if problems:
        raise ConfigError(source, problems)


def serve_config_for(config: TriptychConfig) -> ServeDeploySchema:
    """The Serve config equivalent to running `config` on its own ports (what `triptych serve` deploys)."""
    return ServeDeploySchema.model_validate({
        "proxy_location": "HeadOnly",
        "http_options": {
            "host": config.http_host, "port": config.http_port, "request_timeout_s": config.request_timeout_s,
        },
        "grpc_options": {
            "port": config.grpc_port, "grpc_servicer_functions": GRPC_SERVICERS,
            "request_timeout_s": config.request_timeout_s,
        },
        "applications": [{
            "name": APP_NAME, "route_prefix": "/", "import_path": BUILDER,
            "args": config.model_dump(mode="json"), "runtime_env": {"env_vars": RUNTIME_ENV_VARS},
        }],
    })  # fmt: skip


def controller_options_for(schema: ServeDeploySchema, app_configs: dict[str, TriptychConfig]) -> dict[str, Any]:
    """The file's `controller_options`, with the gRPC proxy's message limit set to the largest
    `limits.max_request_bytes` of its Triptych apps unless the file sets `RAY_SERVE_GRPC_MAX_MESSAGE_SIZE`
    itself. Only a controller started with it applies it (Serve reads it once, when the proxies start)."""
    options = schema.controller_options.model_dump() if schema.controller_options else {}
    env_vars = dict((options.get("runtime_env") or {}).get("env_vars") or {})
    env_vars.setdefault(GRPC_MESSAGE_LIMIT_ENV, str(max(c.limits.max_request_bytes for c in app_configs.values())))
    return {**options, "runtime_env": {**(options.get("runtime_env") or {}), "env_vars": env_vars}}
