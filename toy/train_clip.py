"""Train the toy CLIP contrastively on toy-world image/caption pairs: ``python -m toy.train_clip``.

Data: a pool of pre-rendered training scenes (1-3 objects, full captions) plus single-object scenes
(random cell, size, texture) whose text is drawn per step from "a red circle", "a large red circle",
"a red circle at the top-left" and the full caption, so the model scores short text-to-image prompts
as well as captions. Loss: symmetric InfoNCE; identical texts in a batch are not used as negatives.
Writes ``toy/checkpoints/toy-clip/`` (open_clip local-dir format, see ``toy.clip``) and a
``training.json`` with the held-out zero-shot accuracies and the wall time.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import world
from .clip import (
    TOY_CLIP_DIR,
    build_clip_tokenizer,
    caption_alternatives,
    clip_config,
    create_clip,
    load_clip,
    pixels,
    save_clip,
    zero_shot_captions,
    zero_shot_single,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_pool(n_multi: int, n_groups: int, seed: int) -> tuple[np.ndarray, list[world.Scene]]:
    """(N, 64, 64, 3) uint8 renders and their scenes.

    First ``n_multi`` general scenes (1-3 objects), then ``n_groups`` groups of len(SHAPES) one-object
    scenes that differ only in the shape (same colour, size, cell, jitter, background): sampled as a
    group into a batch, they are hard negatives that only the shape tells apart.
    """
    scenes = [world.make_scene("train", i, seed) for i in range(n_multi)]
    for g in range(n_groups):
        rng = world.scene_rng("train", seed, g, stream="clip-group")
        base = world.single_object_scene(rng, size=None, position=None, texture=True)
        scenes += [replace(base, objects=(replace(base.objects[0], shape=s),)) for s in world.SHAPES]
    images = np.stack([world.render_array(s) for s in tqdm(scenes, desc="render", leave=False)])
    return images, scenes


def sample_batch(
    rng: np.random.Generator, n_multi: int, n_groups: int, batch_size: int, grouped: float = 0.6
) -> np.ndarray:
    """Pool indices: a ``grouped`` fraction of the batch as whole shape groups, the rest general scenes."""
    k = len(world.SHAPES)
    groups = rng.choice(n_groups, size=min(n_groups, max(1, int(batch_size * grouped) // k)), replace=False)
    in_groups = (n_multi + groups[:, None] * k + np.arange(k)[None, :]).ravel()  # (G * k,)
    rest = rng.integers(0, n_multi, size=batch_size - len(in_groups))
    return np.concatenate([in_groups, rest])


def text_for(scene: world.Scene, rng: random.Random) -> str:
    """A caption for a training scene; one-object scenes get a random level of detail."""
    if len(scene.objects) > 1:
        return world.caption(scene)
    return scene.objects[0].describe(with_size=rng.random() < 0.5, with_position=rng.random() < 0.5)


def contrastive_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    scale: torch.Tensor,
    texts: list[str],
    neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over (B, E) normalised features; duplicate texts are masked out as negatives.

    ``neg`` (M, E): extra text-only negatives (hard negative captions), extra columns of the
    image-to-text loss only.
    """
    logits = scale * img @ txt.T  # (B, B)
    idx = {t: i for i, t in enumerate(texts)}
    ids = torch.tensor([idx[t] for t in texts])  # (B,) same id = same text
    same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(texts), dtype=torch.bool)  # (B, B)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(texts))
    i2t = logits if neg is None else torch.cat([logits, scale * img @ neg.T], dim=1)  # (B, B + M)
    return (F.cross_entropy(i2t, target) + F.cross_entropy(logits.T, target)) / 2


def encode_image_and_patches(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised (B, E) image embeddings: the usual [CLS] one and one from the mean patch token.

    Contrasting the mean patch token too makes the last block's patch tokens (what the VLM consumes)
    carry the shapes and colours themselves instead of leaving them to the [CLS] token.
    """
    visual = model.visual
    visual.output_tokens = True
    try:
        pooled, tokens = visual(x)  # (B, E) projected [CLS]; (B, N, W) patch tokens after ln_post
    finally:
        visual.output_tokens = False
    patches = tokens.mean(dim=1) @ visual.proj  # (B, E), the same projection as [CLS]
    return F.normalize(pooled, dim=-1), F.normalize(patches, dim=-1)


def hard_negative(scene: world.Scene, rng: random.Random) -> str:
    """A caption of ``scene`` with one object's colour or shape changed (multi-object scenes)."""
    return rng.choice(caption_alternatives(scene)[1:])


@torch.no_grad()
def quick_eval(model, tokenizer, context: int, images: np.ndarray, items: list[world.T2IItem]) -> float:
    """30-way colour x shape accuracy on pre-rendered validation items (the model in eval mode)."""
    model.eval()
    classes = [(c, s) for s in world.SHAPES for c in world.COLOURS]
    t = tokenizer(
        [f"a {c} {s}" for c, s in classes], padding="max_length", max_length=context, return_tensors="pt"
    )
    sims = (
        model.encode_image(pixels(images), normalize=True) @ model.encode_text(t.input_ids, normalize=True).T
    )
    pred = sims.argmax(1).tolist()
    return float(np.mean([classes[p] == (it.colour, it.shape) for p, it in zip(pred, items)]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=TOY_CLIP_DIR)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-multi", type=int, default=10000)
    parser.add_argument(
        "--n-groups", type=int, default=1500, help="groups of one-object scenes, one per shape"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument(
        "--hard-negatives", type=int, default=64, help="max one-attribute-changed captions per batch"
    )
    parser.add_argument(
        "--eval-items", type=int, default=600, help="held-out images for the final evaluation"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    images, scenes = build_pool(args.n_multi, args.n_groups, args.seed)
    tokenizer = build_clip_tokenizer()
    cfg = clip_config(len(tokenizer), width=args.width, layers=args.layers)
    model = create_clip(cfg).train()
    context = cfg["text_cfg"]["context_length"]

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98),
    )  # fmt: skip
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / args.steps)))
    )
    val_items = world.t2i_items(
        150 if args.eval_every else 1, split="val", with_position=True, with_size=True
    )
    val_images = np.stack([world.render_array(it.scene) for it in val_items])
    rng = random.Random(args.seed)
    order = np.random.default_rng(args.seed)
    bar = tqdm(range(args.steps), desc="toy-clip")
    for step in bar:
        idx = sample_batch(order, args.n_multi, args.n_groups, args.batch_size)  # (B,)
        texts = [text_for(scenes[i], rng) for i in idx]
        negatives = [hard_negative(scenes[i], rng) for i in idx if len(scenes[i].objects) > 1][
            : args.hard_negatives
        ]
        x = pixels(images[idx])  # (B, 3, 64, 64)
        t = tokenizer(
            texts + negatives, padding="max_length", max_length=context, truncation=True, return_tensors="pt"
        )
        img, patches = encode_image_and_patches(model, x)  # (B, E), (B, E)
        txt = model.encode_text(t.input_ids, normalize=True)  # (B + M, E)
        scale = model.logit_scale.exp()
        pos, neg = txt[: len(texts)], txt[len(texts) :]
        loss = (
            contrastive_loss(img, pos, scale, texts, neg) + contrastive_loss(patches, pos, scale, texts, neg)
        ) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{scale.item():.1f}")
        if args.eval_every and (step + 1) % args.eval_every == 0:
            acc = quick_eval(model, tokenizer, context, val_images, val_items)
            model.train()
            tqdm.write(f"step {step + 1}: loss {loss.item():.4f}  val 30-way acc {acc:.3f}")

    model.eval()
    save_clip(model, args.out, cfg)
    train_s = time.perf_counter() - start
    clip = load_clip(args.out)  # evaluate what was written, through open_clip's own loaders
    single = zero_shot_single(clip, n=args.eval_items, split="test")
    captions = zero_shot_captions(clip, n=max(1, args.eval_items // 2), split="test")
    report = {
        "train_seconds": round(train_s, 1),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "heldout_zero_shot_30way": single,
        "heldout_caption_vs_one_attribute_alternatives": captions,
    }
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
