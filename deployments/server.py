"""Starts and stops a running Triptych on Ray Serve, from a Serve config file or a plain TriptychConfig.

One path for every way in: a `ServeDeploySchema` (a `deploy/*.yaml` file, or `serve_config_for(config)`)
is deployed the way `serve run CONFIG` does it (`serve.start` with the file's HTTP / gRPC options, then
the controller builds each application from its `import_path` and applies the file's `deployments:`
overrides). Without an address a fresh local Ray is started and stopped afterwards; with one
(`--address auto`, `ray://...`, `host:port`, or `RAY_ADDRESS`) the cluster is joined, only Triptych's
applications are deleted at the end, and the cluster keeps running. The embedded Redis is not started
here: it is a deployment of the application (`CacheServer`).

Metrics (`deployments.metrics`, Serve's own): with `metrics_port`, a Ray started here exports them for
Prometheus at ``http://127.0.0.1:PORT/metrics``; a joined cluster exports on the port its nodes were
started with (``ray start --metrics-export-port PORT``), so `metrics_port` is ignored there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ray.serve.schema import ServeDeploySchema

from deployments.serve_config import APP_NAME, RUNTIME_ENV_VARS, controller_options_for, serve_config_for
from models.profiles import resolve_chat_model, resolve_embedding_model, resolve_image_model
from triptych.config import TriptychConfig

READY_TIMEOUT_S = 600.0  # generous: the first start of a profile may build its checkpoints
DRAIN_TIMEOUT_S = 30.0  # at the end: how long chats and images in flight may take to finish


class DeployError(RuntimeError):
    """An application did not reach RUNNING (its status message says why)."""


class ProxyError(DeployError):
    """A Serve proxy did not become HEALTHY: most often its HTTP or gRPC port was taken by then."""


@dataclass(frozen=True)
class RunningServer:
    config: TriptychConfig  # the Triptych application's config
    app_name: str
    chat_model_path: Path
    image_model_path: Path
    embedding_model_path: Path
    http_url: str
    grpc_target: str

    def ingress_handle(self):
        from ray import serve

        return serve.get_app_handle(self.app_name)

    def deployment_handle(self, name: str):
        from ray import serve

        return serve.get_deployment_handle(name, app_name=self.app_name)

    @property
    def redis_url(self) -> str | None:
        """The Redis the cache uses: the configured one, else the app's embedded server (asked now)."""
        if not self.config.cache.enabled or self.config.cache.redis_url:
            return self.config.cache.redis_url if self.config.cache.enabled else None
        return self.deployment_handle("CacheServer").url.remote().result()


@contextmanager
def serving(
    config: TriptychConfig | None = None,
    *,
    serve_config: ServeDeploySchema | None = None,
    app_configs: dict[str, TriptychConfig] | None = None,
    address: str | None = None,
    quiet: bool = False,
    metrics_port: int | None = None,
) -> Iterator[RunningServer]:
    """Run Triptych until the block exits; what was started here is stopped afterwards.

    Pass a `config` (its ports and models), or a validated `serve_config` with its Triptych
    `app_configs` (from `deployments.serve_config.load_serve_config`). `address` None (and no
    RAY_ADDRESS) starts a private local Ray; otherwise that cluster is joined and left running.
    `metrics_port`: where a Ray started here serves Prometheus metrics (None: a port Ray picks).
    """
    if serve_config is None:
        config = config or TriptychConfig()
        serve_config, app_configs = serve_config_for(config), {APP_NAME: config}
    assert app_configs, "serve_config needs the TriptychConfig of its Triptych application(s)"
    app_name, app_config = next(iter(app_configs.items()))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Serve's proxy binds with SO_REUSEPORT by default, so a port another process holds is silently shared
    # (the kernel splits the connections between the two servers). Off, a taken port fails the proxy's
    # bind, which the start-up below reports as a ProxyError; the caller may retry on other ports.
    os.environ.setdefault("SERVE_SOCKET_REUSE_PORT_ENABLED", "0")
    for key, value in RUNTIME_ENV_VARS.items():
        os.environ.setdefault(key, value)
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions
    from ray.serve.context import _get_global_client

    if quiet:
        _quiet_logs()
    # Resolve (and on first use build) the checkpoints here, once, before the controller's builder does.
    chat_model = resolve_chat_model(app_config.profile, app_config.model_dir, app_config.chat_model)
    image_model = resolve_image_model(app_config.profile, app_config.model_dir, app_config.image_model)
    embedding_model = resolve_embedding_model(app_config.profile, app_config.model_dir, app_config.embedding_model)
    address = address or os.environ.get("RAY_ADDRESS") or None
    joined = address is not None
    started_ray = not ray.is_initialized()
    if metrics_port is not None and (joined or not started_ray):
        logging.getLogger(__name__).warning(
            "metrics_port %d ignored: the joined Ray exports metrics on its own --metrics-export-port", metrics_port
        )
    if started_ray:
        ray.init(
            _metrics_export_port=metrics_port if not joined else None,
            address=address or "local",  # "local": never attach to some other cluster by accident
            include_dashboard=False if not joined else None,
            log_to_driver=not quiet,
            logging_level=logging.WARNING if quiet else logging.INFO,
            runtime_env={"env_vars": RUNTIME_ENV_VARS},
        )
    try:
        # Serve already running on a joined cluster: add our apps and later remove only them.
        serve_was_running = joined and _refuse_to_replace_other_apps(set(app_configs))
        serve.start(
            proxy_location=serve_config.proxy_location,
            http_options=serve_config.http_options.model_dump(),
            grpc_options=gRPCOptions(**serve_config.grpc_options.model_dump()),
            controller_options=controller_options_for(serve_config, app_configs),  # the gRPC message limit
            logging_config={"log_level": "WARNING"} if quiet else None,
        )
        _get_global_client().deploy_apps(serve_config, _blocking=False)
        _wait_until_running(list(app_configs))
        _wait_until_proxies_healthy()
        http = serve_config.http_options
        yield RunningServer(
            config=app_config,
            app_name=app_name,
            chat_model_path=chat_model,
            image_model_path=image_model,
            embedding_model_path=embedding_model,
            http_url=f"http://{_loopback_if_any(http.host)}:{http.port}",
            grpc_target=f"127.0.0.1:{serve_config.grpc_options.port}",
        )
    finally:
        try:
            if _get_global_client(raise_if_no_controller_running=False) is not None:
                _drain(list(app_configs))
            if serve_was_running:
                for name in app_configs:
                    serve.delete(name)
            else:
                serve.shutdown()
        finally:
            if started_ray:
                ray.shutdown()


def _wait_until_running(app_names: list[str], timeout_s: float = READY_TIMEOUT_S) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        apps = serve.status().applications
        statuses = {name: apps[name] for name in app_names if name in apps}
        failed = {name: s for name, s in statuses.items() if s.status in ("DEPLOY_FAILED", "UNHEALTHY")}
        if failed:
            raise DeployError("; ".join(f"application {n!r} {s.status}: {s.message}" for n, s in failed.items()))
        if len(statuses) == len(app_names) and all(s.status == "RUNNING" for s in statuses.values()):
            return
        if time.monotonic() > deadline:
            raise DeployError(f"applications {app_names} not RUNNING after {timeout_s:.0f} s: {statuses}")
        time.sleep(0.2)


def _drain(app_names: list[str], timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Before Serve stops: let the chats and images in flight finish (at most `timeout_s`), so stopping
    (Ctrl-C or SIGTERM to `triptych serve`) cuts no stream. New requests are still admitted meanwhile."""
    from ray import serve

    from deployments.admission import drain

    for name in app_names:
        try:
            app = serve.status().applications.get(name)
            ingress = app.deployments.get("TriptychIngress") if app else None
            replicas = ingress.replica_states.get("RUNNING", 0) if ingress else 0
            if replicas and not drain(name, replicas, timeout_s):
                logging.getLogger(__name__).warning("%s: requests still in flight after %.0f s; stopping anyway",
                                                    name, timeout_s)
        except Exception as exc:  # noqa: BLE001  stopping goes on whatever state the app is in
            logging.getLogger(__name__).warning("%s: not drained (%s: %s)", name, type(exc).__name__, exc)


def _wait_until_proxies_healthy(timeout_s: float = 120.0) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        proxies = {node: str(getattr(state, "value", state)) for node, state in serve.status().proxies.items()}
        if proxies and all(state == "HEALTHY" for state in proxies.values()):
            return
        if "UNHEALTHY" in proxies.values() or time.monotonic() > deadline:
            raise ProxyError(f"Serve proxies not HEALTHY ({proxies}): is the HTTP or gRPC port taken?")
        time.sleep(0.2)


def _refuse_to_replace_other_apps(ours: set[str]) -> bool:
    """True when Serve already runs on the cluster. Deploying a config is declarative: it would delete
    the cluster's other applications, so their presence is an error."""
    from ray import serve
    from ray.serve.context import _get_global_client

    if _get_global_client(raise_if_no_controller_running=False) is None:
        return False  # no Serve on that cluster yet: this process starts (and later stops) it
    others = set(serve.status().applications) - ours
    if others:
        raise DeployError(
            f"the cluster already runs Serve applications {sorted(others)}; deploying Triptych's config "
            "would replace them. Add them to one config file and use `serve deploy`, or use another cluster."
        )
    return True


def _loopback_if_any(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _quiet_logs() -> None:
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
