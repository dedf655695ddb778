"""`triptych` command line: serve, demo, chat, generate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from triptych.config import TriptychConfig


def _config(args: argparse.Namespace) -> TriptychConfig:
    overrides = {k: v for k, v in (("profile", args.profile), ("model_dir", args.model_dir),
                                   ("http_port", args.http_port), ("grpc_port", args.grpc_port)) if v}
    return TriptychConfig(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from deployments.server import serving

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with serving(_config(args)) as server:
            print(f"Triptych is serving: HTTP {server.http_url}/v1  gRPC {server.grpc_target}  "
                  f"(chat {server.chat_model_path.name}, images {server.image_model_path.name}, "
                  f"cache {server.redis_url}). Ctrl-C to stop.", flush=True)
            stop.wait()
    except KeyboardInterrupt:  # Ctrl-C while starting or serving: `serving` has stopped everything
        pass
    print("Triptych stopped.", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from launcher.demo import run_demo

    return run_demo(_config(args))


def cmd_chat(args: argparse.Namespace) -> int:
    import grpc

    from launcher.client import TriptychClient

    images = [Path(p).read_bytes() for p in args.image]
    options = {k: v for k, v in (("max_tokens", args.max_tokens), ("temperature", args.temperature),
                                 ("seed", args.seed), ("pruning_method", args.pruning_method),
                                 ("visual_token_keep_ratio", args.keep_ratio),
                                 ("visual_token_count", args.keep_tokens)) if v is not None}
    with TriptychClient(args.target) as client:
        try:
            for message in client.chat(args.question, images, **options):
                print(message.delta, end="", flush=True)
                if message.HasField("usage"):
                    u = message.usage
                    print(f"\n[finish={message.finish_reason} prompt_tokens={u.prompt_tokens} "
                          f"completion_tokens={u.completion_tokens} visual_tokens={u.visual_tokens_kept}/"
                          f"{u.visual_tokens_in} cache_hit={u.cache_hit} timings_ms={dict(u.timings_ms)}]")
        except grpc.RpcError as exc:
            print(f"\nerror: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import grpc
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from launcher.client import TriptychClient
    from triptych.v1 import triptych_pb2 as pb

    fields = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("seed", args.seed),
                                ("guidance_scale", args.guidance_scale), ("n", args.n),
                                ("cache_interval", args.cache_interval)) if v is not None}
    if args.size:
        width, _, height = args.size.partition("x")
        fields.update(width=int(width), height=int(height or width))
    request = pb.GenerateImageRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, **fields)
    with TriptychClient(args.target) as client, Progress(
        TextColumn("denoising"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("denoise", total=None)
        try:
            for event in client.generate_image(request):
                if event.HasField("progress"):
                    progress.update(task, completed=event.progress.step, total=event.progress.total_steps)
                else:
                    result = event.result
        except grpc.RpcError as exc:
            progress.stop()
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    for index, image in enumerate(result.images):
        path = args.output if index == 0 else args.output.with_stem(f"{args.output.stem}-{index + 1}")
        path.write_bytes(image.png)
        print(f"wrote {path} (seed {image.seed})")
    timings = ", ".join(f"{k}={v:.1f}" for k, v in sorted(result.timings_ms.items()))
    print(f"cache_hit={result.cache_hit}  timings_ms: {timings}")
    return 0


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
    chat = sub.add_parser("chat", help="stream an answer from a running server over gRPC")
    chat.add_argument("question")
    chat.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    chat.add_argument("--target", default="127.0.0.1:9000")
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
    gen.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8")
    gen.add_argument("--cache-interval", type=int)
    gen.add_argument("--target", default="127.0.0.1:9000")
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
