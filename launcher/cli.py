"""`triptych` command line: serve, demo, chat, generate, embed, workflow."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from triptych.config import TriptychConfig


def _config(args: argparse.Namespace) -> TriptychConfig:
    overrides = {k: v for k, v in (("profile", args.profile), ("model_dir", args.model_dir),
                                   ("http_port", args.http_port), ("grpc_port", args.grpc_port)) if v}
    return TriptychConfig(**overrides)


def _serve_setup(args: argparse.Namespace):
    """(Serve config, {app: TriptychConfig}) from --config FILE (flags override the file) or from flags."""
    from deployments.serve_config import APP_NAME, load_serve_config, serve_config_for, validate_serve_config

    if args.config is None:
        config = _config(args)
        return serve_config_for(config), {APP_NAME: config}
    schema, _ = load_serve_config(args.config)
    raw = schema.model_dump(mode="json", exclude_unset=True)
    if args.http_port:
        raw.setdefault("http_options", {})["port"] = args.http_port
    if args.grpc_port:
        raw.setdefault("grpc_options", {})["port"] = args.grpc_port
    for app in raw["applications"]:
        app_args = app.setdefault("args", {}) if app.get("import_path") == "deployments.app:app_builder" else {}
        for key, value in (("profile", args.profile), ("model_dir", args.model_dir and str(args.model_dir))):
            if value:
                app_args[key] = value
    return validate_serve_config(raw, str(args.config))


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from deployments.server import DeployError, serving
    from triptych.config import ConfigError

    try:
        serve_config, app_configs = _serve_setup(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        keyed = _check_api_keys(app_configs, joined=bool(args.address or os.environ.get("RAY_ADDRESS")))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _warn_if_open(serve_config.http_options.host, keyed)
    stop = threading.Event()
    try:
        with serving(serve_config=serve_config, app_configs=app_configs, address=args.address,
                     metrics_port=args.metrics_port) as server:
            # After ray.init: Ray's core worker installs its own SIGTERM handler (it aborts the process)
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            print(f"Triptych is serving: HTTP {server.http_url}/v1  gRPC {server.grpc_target}  "
                  f"(chat {server.chat_model_path.name}, images {server.image_model_path.name}, "
                  f"cache {server.redis_url}). Ctrl-C to stop.", flush=True)
            print(f"open {server.http_url}/", flush=True)  # the browser page (deployments/web_page.py)
            stop.wait()
    except KeyboardInterrupt:  # Ctrl-C while starting or serving: `serving` has stopped everything
        pass
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("Triptych stopped.", flush=True)
    return 0


def _check_api_keys(app_configs: dict[str, TriptychConfig], joined: bool) -> bool:
    """Whether every app has API keys (TRIPTYCH_API_KEYS here, or its auth.api_keys_file). A key file is
    read now when this machine runs the replicas (no cluster joined), so a bad one fails before the start."""
    from triptych.auth import API_KEYS_ENV, load_api_keys

    if not joined:
        return all(load_api_keys(c.auth.api_keys_file).enabled for c in app_configs.values())
    return bool(os.environ.get(API_KEYS_ENV, "").strip()) or all(
        c.auth.api_keys_file is not None for c in app_configs.values())


def _warn_if_open(host: str, keyed: bool) -> None:
    if keyed:
        return
    hint = "set TRIPTYCH_API_KEYS or auth.api_keys_file to require a key"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host} without API keys: reachable from other machines; {hint}",
              file=sys.stderr)
    else:  # Serve's gRPC proxy binds [::]:PORT whatever http_options.host says
        print(f"note: no API keys; Ray Serve's gRPC proxy listens on every interface; {hint}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from launcher.demo import run_demo

    return run_demo(_config(args))


class CliError(Exception):
    """A failure the user can act on: `main` prints it as one line `error: <message>` and exits 2."""


def _read_file(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror or exc}") from None


def _check_writable(path: Path, flag: str) -> None:
    """Fail before any server work when ``path`` cannot be written."""
    parent = path.parent
    if path.is_dir():
        raise CliError(f"{flag} {path}: is a directory")
    if not parent.is_dir():
        raise CliError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"{flag} {path}: not writable")


def _write_file(path: Path, data: bytes, flag: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror or exc}") from None


@contextmanager
def _rpc_errors(target: str) -> Iterator[None]:
    """gRPC failures as CliErrors: an unreachable server names the target tried; others give code + details."""
    import grpc

    try:
        yield
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise CliError(f"no Triptych server reachable at {target} (gRPC UNAVAILABLE: {exc.details()}); "
                           "start one with `triptych serve` or pass --target HOST:PORT") from None
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise CliError(f"UNAUTHENTICATED: {exc.details()} (pass --api-key KEY or set TRIPTYCH_API_KEY)") from None
        raise CliError(f"{exc.code().name}: {exc.details()}") from None


def _size(value: str) -> tuple[int, int]:
    """argparse type for --size: 'WIDTHxHEIGHT' (or one number for a square)."""
    width, sep, height = value.lower().partition("x")
    height = height if sep else width
    if not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not WIDTHxHEIGHT, e.g. 64x64")
    return int(width), int(height)


def cmd_chat(args: argparse.Namespace) -> int:
    from launcher.client import TriptychClient

    images = [_read_file(Path(p), "--image") for p in args.image]
    options = {k: v for k, v in (("max_tokens", args.max_tokens), ("temperature", args.temperature),
                                 ("seed", args.seed), ("pruning_method", args.pruning_method),
                                 ("visual_token_keep_ratio", args.keep_ratio),
                                 ("visual_token_count", args.keep_tokens)) if v is not None}
    with TriptychClient(args.target, api_key=args.api_key) as client, _rpc_errors(args.target):
        for message in client.chat(args.question, images, **options):
            print(message.delta, end="", flush=True)
            if message.HasField("usage"):
                u = message.usage
                print(f"\n[finish={message.finish_reason} prompt_tokens={u.prompt_tokens} "
                      f"completion_tokens={u.completion_tokens} visual_tokens={u.visual_tokens_kept}/"
                      f"{u.visual_tokens_in} cache_hit={u.cache_hit} timings_ms={dict(u.timings_ms)}]")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from launcher.client import TriptychClient
    from triptych.v1 import triptych_pb2 as pb

    _check_writable(args.output, "--output")
    fields = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("seed", args.seed),
                                ("guidance_scale", args.guidance_scale), ("n", args.n),
                                ("cache_interval", args.cache_interval)) if v is not None}
    if args.size:
        fields.update(width=args.size[0], height=args.size[1])
    request = pb.GenerateImageRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, **fields)
    result = None
    with TriptychClient(args.target, api_key=args.api_key) as client, Progress(
        TextColumn("denoising"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
    ) as progress, _rpc_errors(args.target):
        task = progress.add_task("denoise", total=None)
        for event in client.generate_image(request):
            if event.HasField("progress"):
                progress.update(task, completed=event.progress.step, total=event.progress.total_steps)
            else:
                result = event.result
    if result is None:
        raise CliError(f"the server at {args.target} ended the stream without an image")
    for index, image in enumerate(result.images):
        path = args.output if index == 0 else args.output.with_stem(f"{args.output.stem}-{index + 1}")
        _write_file(path, image.png, "--output")
        print(f"wrote {path} (seed {image.seed})")
    timings = ", ".join(f"{k}={v:.1f}" for k, v in sorted(result.timings_ms.items()))
    print(f"cache_hit={result.cache_hit}  timings_ms: {timings}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed texts and images over gRPC; print each input and their cosine similarities, or JSON."""
    import json

    from launcher.client import TriptychClient

    if not args.inputs:
        raise CliError("embed needs at least one --text TEXT or --image FILE")
    inputs = [value if kind == "text" else _read_file(Path(value.removeprefix("@")), "--image")
              for kind, value in args.inputs]  # fmt: skip
    with TriptychClient(args.target, api_key=args.api_key) as client, _rpc_errors(args.target):
        response = client.embed(inputs)
    vectors = [list(e.values) for e in response.embeddings]  # unit vectors: cosine = dot product
    if args.json:
        print(json.dumps({"model": response.model, "embeddings": vectors, "prompt_tokens": response.prompt_tokens,
                          "cache_hit": response.cache_hit, "timings_ms": dict(response.timings_ms)}))  # fmt: skip
        return 0
    print(f"{len(vectors)} vectors of {len(vectors[0])} dimensions from {response.model} "
          f"(prompt_tokens={response.prompt_tokens}, cache_hit={response.cache_hit})")
    for index, (kind, value) in enumerate(args.inputs):
        print(f"[{index}] {kind:5} {value}")
    print("cosine similarity:\n     " + "".join(f"{f'[{j}]':>8}" for j in range(len(vectors))))
    for i, row in enumerate(vectors):
        print(f"{f'[{i}]':>5}" + "".join(f"{sum(a * b for a, b in zip(row, col)):8.3f}" for col in vectors))
    return 0


def cmd_workflow(args: argparse.Namespace) -> int:
    """``triptych workflow validate FILE...``; ``validate`` is reserved, any other first word names a workflow."""
    if args.name != "validate":
        return _run_workflow(args)
    if not args.args:
        raise CliError("workflow validate needs at least one FILE")
    return _validate_workflow_files([Path(file) for file in args.args])


def _run_workflow(args: argparse.Namespace) -> int:
    """Run workflow ``args.name`` over gRPC: one line per step started / finished, chat text as it
    streams, then the outputs (images written under --output-dir)."""
    from launcher.client import TriptychClient
    from launcher.workflow_run import InputFlagError, input_value, output_lines

    if args.args:
        raise CliError(f"unexpected arguments {' '.join(args.args)!r}; inputs go as --input KEY=VALUE")
    try:
        inputs = dict(input_value(flag, _read_file) for flag in args.input)
    except InputFlagError as exc:
        raise CliError(str(exc)) from None
    _check_writable(args.output_dir / "output.png", "--output-dir")
    result = None
    with TriptychClient(args.target, api_key=args.api_key) as client, _rpc_errors(args.target):
        for message in client.run_workflow(args.name, inputs):
            if message.HasField("result"):
                result = message.result
            elif message.step.state == "progress":
                print(message.step.text, end="", flush=True)  # a chat step's text ("" for denoising steps)
            else:
                print(f"[{message.step.step} {message.step.state} at {message.step.at_ms:.0f} ms]", flush=True)
    if result is None:
        raise CliError(f"the server at {args.target} ended the stream without a result")
    for line in output_lines(result.outputs, args.output_dir, _write_file):
        print(line)
    return 0


def _validate_workflow_files(paths: list[Path]) -> int:
    """Print every problem of every file (exit 2), or one line per valid file (exit 0)."""
    from pipelines.workflow.load import check_file

    failed = 0
    for path in paths:
        workflow, problems = check_file(path)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            failed += 1
            print(f"{path}: {len(problems)} error{'s' if len(problems) > 1 else ''}", file=sys.stderr)
        else:
            print(f"{path}: workflow {workflow.name!r} is valid ({len(workflow.inputs)} inputs, "
                  f"{len(workflow.steps)} steps, outputs {', '.join(o.name for o in workflow.outputs)})")
    return 2 if failed else 0


API_KEY_HELP = "the server's API key, sent as gRPC metadata 'authorization: Bearer KEY' (env TRIPTYCH_API_KEY)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triptych", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (("serve", cmd_serve, "serve HTTP :8000 and gRPC :9000 until Ctrl-C"),
                             ("demo", cmd_demo, "start, ask about a bundled image twice, stop")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--profile", help="model profile: toy (default; trained weights shipped in the repo), tiny, bench (env TRIPTYCH_PROFILE)")
        p.add_argument("--model-dir", type=Path, help="where models live (env TRIPTYCH_MODEL_DIR)")
        p.add_argument("--http-port", type=int)
        p.add_argument("--grpc-port", type=int)
        p.set_defaults(func=func)
    serve = sub.choices["serve"]
    serve.add_argument("--config", type=Path,
                       help="a Serve config file (e.g. deploy/local.yaml); the flags above override it")
    serve.add_argument("--address", help="join this Ray cluster (auto, ray://host:10001, host:6379; env "
                                         "RAY_ADDRESS) instead of starting a local one; it keeps running after")
    serve.add_argument("--metrics-port", type=int, help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics "
                       "(a Ray started here; a joined cluster exports on its own --metrics-export-port)")
    chat = sub.add_parser("chat", help="stream an answer from a running server over gRPC")
    chat.add_argument("question")
    chat.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    chat.add_argument("--target", default="127.0.0.1:9000")
    chat.add_argument("--api-key", help=API_KEY_HELP)
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--seed", type=int)
    chat.add_argument("--pruning-method", help="none, cls_attention, visionzip, tome, divprune")
    chat.add_argument("--keep-ratio", type=float, help="visual tokens kept per image, in (0, 1]")
    chat.add_argument("--keep-tokens", type=int, help="absolute visual tokens kept per image")
    chat.set_defaults(func=cmd_chat)
    gen = sub.add_parser("generate", help="generate an image on a running server over gRPC, with progress")
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", type=Path, default=Path("out.png"))
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--steps", type=int)
    gen.add_argument("--sampler", help="ddim, euler, dpmpp_2m, unipc, lcm (server default: dpmpp_2m)")
    gen.add_argument("--guidance-scale", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--n", type=int)
    gen.add_argument("--size", type=_size, help="WIDTHxHEIGHT, multiples of 8")
    gen.add_argument("--cache-interval", type=int)
    gen.add_argument("--target", default="127.0.0.1:9000")
    gen.add_argument("--api-key", help=API_KEY_HELP)
    gen.set_defaults(func=cmd_generate)
    emb = sub.add_parser("embed", help="embed texts and images on a running server over gRPC: cosine similarities")
    emb.add_argument("--text", dest="inputs", action="append", default=[], type=lambda v: ("text", v), metavar="TEXT",
                     help="a text (repeatable; inputs keep their order)")
    emb.add_argument("--image", dest="inputs", action="append", type=lambda v: ("image", v), metavar="FILE",
                     help="an image file, FILE or @FILE (repeatable)")
    emb.add_argument("--json", action="store_true", help="print the vectors and usage as JSON")
    emb.add_argument("--target", default="127.0.0.1:9000")
    emb.add_argument("--api-key", help=API_KEY_HELP)
    emb.set_defaults(func=cmd_embed)
    workflow = sub.add_parser("workflow", help="run a workflow on a server over gRPC (`NAME --input KEY=VALUE`), "
                              "or check workflow files without a server (`validate FILE...`)")
    workflow.add_argument("name", metavar="NAME|validate", help="a workflow name, or validate")
    workflow.add_argument("args", nargs="*", metavar="FILE", help="workflow YAML files (validate)")
    workflow.add_argument("--input", action="append", default=[], metavar="KEY=VALUE",
                          help="an input: KEY=@file.png (image), KEY=@a.png,@b.png (images), a JSON value, or text")
    workflow.add_argument("--output-dir", type=Path, default=Path("."), help="where image outputs are written")
    workflow.add_argument("--target", default="127.0.0.1:9000")
    workflow.add_argument("--api-key", help=API_KEY_HELP)
    workflow.set_defaults(func=cmd_workflow)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
