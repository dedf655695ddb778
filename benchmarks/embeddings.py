"""Joint image-text embeddings: does batching pay, and does the toy CLIP retrieve the right image?

    python -m benchmarks.embeddings [--quick] [--profile toy] [--inputs 256] [--repeats 3] [--no-serve]

Side by side in one run (medians over ``--repeats`` rounds, the two orders alternating):
- in-process ``ClipEmbedder``: ``--inputs`` new texts (toy-world prompts) and images (rendered toy
  scenes, PNG bytes, decoded each time) embedded one per call vs 32 per call;
- through Serve (HTTP ``/v1/embeddings``, the embedding cache off so every input is computed): one input
  per request one after another, 32 per request, and 32 concurrent one-input requests, which the
  ``Embedder``'s ``@serve.batch`` merges into shared forward passes;
- toy retrieval (the ``toy`` profile's toy CLIP): each of the 30 captions "a <colour> <shape>" ranks the
  30 single-object toy images; top-1 accuracy both ways, and the rank of the red circle for "a red circle".

``benchmarks.workflows`` may reuse ``benchmark_inputs``, ``measure_in_process`` and ``toy_retrieval``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from benchmarks.common import configure_process, emit, log, model_root
from benchmarks.report import load_average, machine_summary, markdown_table

BATCH = 32


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embeddings", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 inputs, 1 round, tiny profile: a smoke run")
    parser.add_argument("--profile", default=None, help="model profile (default toy; quick: tiny)")
    parser.add_argument("--model", default=None, help="an embedding model of the profile or an open_clip dir")
    parser.add_argument("--model-dir", default=None, help="model root (default TRIPTYCH_MODEL_DIR)")
    parser.add_argument("--inputs", type=int, default=None, help="texts and images per measurement (default 256)")
    parser.add_argument("--repeats", type=int, default=None, help="measured rounds (default 3; quick 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads here and in the Embedder")
    parser.add_argument("--no-serve", action="store_true", help="in-process only (no Ray)")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    args.profile = args.profile or ("tiny" if args.quick else "toy")
    args.inputs = args.inputs or (64 if args.quick else 256)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.inputs < BATCH or args.repeats < 1:
        parser.error(f"--inputs must be >= {BATCH} and --repeats >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = configure_process(args.threads)
    load_before = load_average()
    from encoders.clip_embedder import ClipEmbedder
    from models.profiles import resolve_embedding_model

    model_dir = resolve_embedding_model(args.profile, model_root(args), args.model)
    engine = ClipEmbedder.from_dir(model_dir)
    texts, images = benchmark_inputs(args.inputs)
    log(f"in-process {engine.info().model_id}: {args.inputs} texts and images, 1 vs {BATCH} per call")
    result = {"machine": machine_summary(), "threads": threads, "profile": args.profile,
              "model": engine.info().model_id, "inputs": args.inputs, "repeats": args.repeats,
              "in_process": measure_in_process(engine, texts, images, args.repeats),
              "retrieval": toy_retrieval(engine)}  # fmt: skip
    if not args.no_serve:
        result["serve"] = measure_serve(args, texts, threads)
    result["runtime_s"] = round(time.perf_counter() - started, 1)
    result["load_average"] = {"before": load_before, "after": load_average()}
    emit(result, render(result), args.json)
    return 0


def benchmark_inputs(n: int) -> tuple[list[str], list[bytes]]:
    """``n`` distinct short toy-world prompts ("a red circle 7": within every profile's context) and
    ``n`` rendered toy scenes (one to three objects) as PNG bytes."""
    from toy import world

    rng = random.Random(0)
    texts = [f"{world.prompt_for(world.single_object_scene(rng))} {i}" for i in range(n)]  # the index: all new
    return texts, [_png(world.render(world.make_scene("test", i))) for i in range(n)]


def measure_in_process(engine, texts: Sequence[str], images: Sequence[bytes], repeats: int) -> dict:
    """Inputs per second at 1 and ``BATCH`` per call, for texts and images (medians; ratio batched / single)."""
    out = {}
    for kind, inputs, embed in (("texts", texts, engine.embed_texts), ("images", images, engine.embed_images)):
        embed(list(inputs[:BATCH]))  # warm-up
        out[kind] = _side_by_side({"1": lambda i=inputs, e=embed: _calls(e, i, 1),
                                   str(BATCH): lambda i=inputs, e=embed: _calls(e, i, BATCH)}, len(inputs), repeats)
    return out


def _calls(embed: Callable, inputs: Sequence, batch: int) -> None:
    for start in range(0, len(inputs), batch):
        embed(list(inputs[start : start + batch]))


def _side_by_side(modes: dict[str, Callable[[], None]], n: int, repeats: int) -> dict:
    """{"per_s": {mode: inputs/s (median)}, "ratio": last mode over the first}; the order alternates per round."""
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(repeats):
        for mode in list(modes) if round_ % 2 == 0 else list(reversed(modes)):
            started = time.perf_counter()
            modes[mode]()
            seconds[mode].append(time.perf_counter() - started)
    rates = {mode: n / statistics.median(values) for mode, values in seconds.items()}
    values = list(rates.values())
    return {"per_s": rates, "ratio": values[-1] / values[0]}


def toy_retrieval(engine) -> dict:
    """Text-to-image retrieval over the 30 single-object toy images, one per (colour, shape)."""
    import torch

    from toy import world

    classes = [(colour, shape) for shape in world.SHAPES for colour in world.COLOURS]
    captions = [f"a {colour} {shape}" for colour, shape in classes]
    images = [_png(world.render(world.single_object_scene(random.Random(i), shape=s, colour=c)))
              for i, (c, s) in enumerate(classes)]  # fmt: skip
    similarity = engine.embed_texts(captions) @ engine.embed_images(images).T  # (30 captions, 30 images)
    right = torch.arange(len(classes))
    red_circle = captions.index("a red circle")
    ranking = similarity[red_circle].argsort(descending=True).tolist()
    return {"n": len(classes),
            "text_to_image_top1": float((similarity.argmax(dim=1) == right).float().mean()),
            "image_to_text_top1": float((similarity.argmax(dim=0) == right).float().mean()),
            "red_circle_rank": ranking.index(red_circle) + 1}  # fmt: skip


def measure_serve(args: argparse.Namespace, texts: Sequence[str], threads: int) -> dict:
    """Texts per second through HTTP: 1 per request, ``BATCH`` per request, ``BATCH`` concurrent 1-input requests."""
    import httpx

    from deployments.server import serving
    from triptych.config import BatchOptions, CacheOptions, DeploymentOptions, TriptychConfig
    from triptych.ports import free_port

    config = TriptychConfig(
        profile=args.profile, model_dir=model_root(args), embedding_model=args.model,
        http_port=free_port(), grpc_port=free_port(), cache=CacheOptions(enabled=False),  # every input computed
        ingress=DeploymentOptions(num_cpus=0.1, max_ongoing_requests=2 * BATCH, max_queued_requests=2 * BATCH),
        embedder=DeploymentOptions(num_cpus=0.5, max_ongoing_requests=2 * BATCH, max_queued_requests=2 * BATCH,
                                   torch_threads=threads),
        embedder_batch=BatchOptions(max_batch_size=BATCH, batch_wait_timeout_s=0.01),
    )  # fmt: skip
    log("starting Triptych for the Serve measurements")
    with serving(config, quiet=True) as server, httpx.Client(base_url=server.http_url, timeout=600) as http:
        def post(batch: list[str]) -> None:
            _check(http.post("/v1/embeddings", json={"input": batch, "encoding_format": "base64"}))

        post(list(texts[:BATCH]))  # warm-up
        embedder = server.deployment_handle("Embedder")
        forwards: dict[str, int] = {}

        def counted(mode: str, run: Callable[[], None]) -> Callable[[], None]:
            def measured() -> None:
                before = embedder.stats.remote().result()["forwards"]
                run()
                forwards[mode] = forwards.get(mode, 0) + embedder.stats.remote().result()["forwards"] - before
            return measured

        modes = {"1 per request": lambda: _calls(post, texts, 1),
                 f"{BATCH} concurrent requests of 1": lambda: asyncio.run(_concurrent(server.http_url, texts)),
                 f"{BATCH} per request": lambda: _calls(post, texts, BATCH)}  # fmt: skip
        rates = _side_by_side({mode: counted(mode, run) for mode, run in modes.items()}, len(texts), args.repeats)
    return {**rates, "forwards_per_round": {mode: count / args.repeats for mode, count in forwards.items()}}


async def _concurrent(url: str, texts: Sequence[str]) -> None:
    """``BATCH`` clients, each sending its share of the texts one per request."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        async def client(share: Sequence[str]) -> None:
            for text in share:
                _check(await http.post("/v1/embeddings", json={"input": [text], "encoding_format": "base64"}))

        await asyncio.gather(*(client(texts[i::BATCH]) for i in range(BATCH)))


def _check(response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"/v1/embeddings: {response.status_code} {response.text[:300]}")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def render(result: dict) -> str:
    out = io.StringIO()
    m = result["machine"]
    print(f"## Embeddings benchmark (profile {result['profile']}, model {result['model']})\n", file=out)
    print(f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores; torch {m['torch']}; {result['threads']} "
          f"threads; {result['inputs']} inputs, median of {result['repeats']} rounds; runtime {result['runtime_s']} s; "
          f"load average {result['load_average']['before']} -> {result['load_average']['after']}.\n", file=out)
    rows = [[f"in-process {kind}", f"{r['per_s']['1']:.1f}", f"{r['per_s'][str(BATCH)]:.1f}", f"{r['ratio']:.2f}x"]
            for kind, r in result["in_process"].items()]  # fmt: skip
    print(markdown_table(["inputs/s", "1 per call", f"{BATCH} per call", "ratio"], rows), file=out)
    if "serve" in result:
        s = result["serve"]
        base = s["per_s"]["1 per request"]
        print(f"\n### Through Serve (HTTP /v1/embeddings, {result['inputs']} new texts per round, cache off)\n",
              file=out)
        print(markdown_table(["requests", "texts/s", "vs 1 per request", "embedder forward passes per round"],
                             [[mode, f"{rate:.1f}", f"{rate / base:.2f}x", f"{s['forwards_per_round'][mode]:.0f}"]
                              for mode, rate in s["per_s"].items()]), file=out)  # fmt: skip
    r = result["retrieval"]
    print(f"\n### Toy retrieval ({r['n']} single-object images, model {result['model']})\n", file=out)
    print(markdown_table(["task", "result"], [
        ["caption -> image, top-1", f"{100 * r['text_to_image_top1']:.1f}%"],
        ["image -> caption, top-1", f"{100 * r['image_to_text_top1']:.1f}%"],
        ["rank of the red circle for 'a red circle'", r["red_circle_rank"]]]), file=out)
    return out.getvalue()


if __name__ == "__main__":
    sys.exit(main())
