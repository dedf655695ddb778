"""The Triptych that ``benchmarks.load`` starts for itself, and the loopback-only rule for targets.

Its stage deployments (vision encoder, LLM decoder, denoiser) autoscale between 1 and ``max_replicas``
at ``target_ongoing_requests`` 2, with fast settings so a benchmark of a few minutes shows scale-up and
scale-down (Serve's production defaults: metrics every 10 s, 30 s look-back, 30 s before scaling up,
600 s before scaling down). Replicas take a fraction of a CPU, so a 2-core machine can place them.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from triptych.config import DecoderBatching, DeploymentOptions, TriptychConfig
from triptych.ports import free_port

FAST_AUTOSCALING = {"metrics_interval_s": 0.5, "look_back_period_s": 2.0, "upscale_delay_s": 2.0,
                    "downscale_delay_s": 10.0}


def autoscaling_config(profile: str, model_dir: Path, max_replicas: int,
                       batching: DecoderBatching | None = None) -> TriptychConfig:
    """A Triptych on free loopback ports whose stage deployments scale 1..max_replicas.

    ``batching``: each decoder replica's engine (default: the production ``DecoderBatching``); the
    decoder's Serve ``max_ongoing_requests`` is its batch + waiting room, as in production.
    """

    def stage(**options) -> DeploymentOptions:
        return DeploymentOptions(min_replicas=1, max_replicas=max_replicas, target_ongoing_requests=2,
                                 num_cpus=0.2, **FAST_AUTOSCALING, **options)

    batching = batching or DecoderBatching()
    return TriptychConfig(
        profile=profile, model_dir=model_dir, http_port=free_port(), grpc_port=free_port(),
        ingress=DeploymentOptions(num_cpus=0.1, max_ongoing_requests=64, max_queued_requests=128),
        vision_encoder=stage(), denoiser=stage(),
        llm_decoder=stage(max_ongoing_requests=batching.max_batch_size + batching.max_waiting),
        text_encoder=DeploymentOptions(num_cpus=0.1), decoder_batching=batching,
    )


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback IP (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_url(url: str) -> str:
    """``url`` without a trailing slash when it is http(s) on a loopback host; else ValueError saying why."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL such as http://127.0.0.1:8000")
    if not is_loopback(parts.hostname):
        raise ValueError(f"{url!r}: the load generator only targets loopback (127.0.0.1, ::1, localhost), "
                         f"not {parts.hostname!r}")
    return url.rstrip("/")


def loopback_target(target: str) -> str:
    """A gRPC ``host:port`` on a loopback host; else ValueError saying why."""
    parts = urlsplit(f"//{target}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ValueError(f"{target!r} is not a host:port such as 127.0.0.1:9000")
    if not is_loopback(parts.hostname):
        raise ValueError(f"{target!r}: the load generator only targets loopback (127.0.0.1, ::1, localhost), "
                         f"not {parts.hostname!r}")
    return target
