"""What the edge enforces in one ingress replica: the API keys and the largest request accepted.

Serve runs a copy of the FastAPI app frozen when the ingress class is decorated, so the HTTP middleware
cannot be handed the replica's config. The ingress constructor installs the policy here instead (once per
replica process: one ingress per replica); the HTTP middleware and the gRPC methods read it. Before it is
installed every HTTP request is refused (503), so no request slips through while a replica starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from triptych.auth import ApiKeys, load_api_keys
from triptych.config import TriptychConfig

logger = logging.getLogger("triptych.edge")


@dataclass(frozen=True)
class EdgePolicy:
    keys: ApiKeys  # no keys: authentication off
    max_request_bytes: int  # a whole HTTP body (the gRPC proxy's own limit matches: deployments.serve_config)


_installed: EdgePolicy | None = None


def install_edge_policy(config: TriptychConfig) -> EdgePolicy:
    """Read the keys (`TRIPTYCH_API_KEYS` here, `config.auth.api_keys_file`) and install the policy.
    Raises ConfigError naming the key file when it cannot be used: the replica does not start."""
    global _installed
    _installed = EdgePolicy(load_api_keys(config.auth.api_keys_file), config.limits.max_request_bytes)
    logger.info("edge policy: %r, requests up to %d bytes", _installed.keys, _installed.max_request_bytes)
    return _installed


def edge_policy() -> EdgePolicy | None:
    """The installed policy; None until the ingress constructor ran in this process."""
    return _installed
