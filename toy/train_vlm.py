"""Train the toy VLM on toy-world question/answer pairs: ``python -m toy.train_vlm [--recipe NAME] [--resume]``.

Vision tower = the trained toy CLIP's ``visual`` (``toy/checkpoints/toy-clip``), fine-tuned; trained
from scratch: the MLP projector and a small Llama (hidden 128, 4 layers, 8 heads, the locally
trained chat tokenizer).

Each step renders fresh scenes (no image is seen twice). Each training sequence is a chat about one
image with 1-12 question/answer turns (question types by ``QTYPE_WEIGHTS``); the first turn is
exactly a serving prompt (``ChatPromptBuilder``: chat template, ``<image>`` expanded to K visual
tokens, image before or after the question), later turns reuse the image so its tokens are paid
once. Pruning robustness: 30% of the sequences keep only K < 64 visual tokens, chosen like serving
chooses them (the registered ``cls_attention`` pruner) or a random subset in spatial order.

Losses: the answer tokens' cross-entropy, plus training-only aids: per-patch colour / shape / cell /
centre targets on the tower (``toy.patch_labels``), the [CLS] attention pulled towards the objects,
projected patches scored against the LM's words for their object (``WordAlignment``) and one
first-layer head supervised to look from the question's key word at the object it names
(``toy.lookup_supervision``).

Named recipes (``toy.vlm_recipes``: ``shipped``, ``curriculum``, ...) set the flags' defaults. A run
keeps a resumable checkpoint and an accuracy-vs-steps log (``metrics.jsonl``: teacher-forced
validation accuracy per question type and per object count) in ``--run-dir``; ``--resume``
continues it where it stopped. ``python -m toy.plot_training`` plots the logs.

Writes ``--out`` (default ``toy/checkpoints/toy-vlm/``, ``open_clip_llava`` format) and
``training.json`` with the held-out accuracies measured through the real loaders and engines.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import patch_labels, vlm_recipes, world
from .clip import PREPROCESS_CFG, TOY_CLIP_DIR, pixels
from .lookup_supervision import (
    HeadAttentionProbe,
    LayerInput,
    answer_objects,
    key_answer_loss,
    key_lookups,
    key_token,
    key_word,
    lookup_loss,
    object_patches,
    relay_loss,
)
from .run_state import RunDir
from .train_clip import seed_everything
from .vlm import (
    IGNORE,
    TOY_VLM_DIR,
    build_sequence,
    build_toy_tokenizer,
    embed_inputs,
    evaluate_vqa,
    llama_config,
    load_vlm,
)


def load_clip_visual(clip_dir: Path):
    """The toy CLIP's visual tower built the way ``open_clip_llava`` builds it (output_tokens=True), frozen."""
    from models.sources import open_clip_llava as src

    model_cfg = json.loads((clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    visual, _ = src.create_visual(model_cfg, PREPROCESS_CFG)
    state = load_file(clip_dir / "open_clip_model.safetensors")
    visual.load_state_dict(
        {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    )
    for p in visual.parameters():
        p.requires_grad_(False)
    return visual.eval(), model_cfg


def encode(tower, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-projector patch tokens (B, 64, D_v) and [CLS] attention (B, 64) of ``images`` (B, 64, 64, 3)."""
    captured = {}
    hook = tower.projector.register_forward_hook(lambda m, args, out: captured.__setitem__("x", args[0]))
    try:
        _, cls_attention = tower(pixels(images))  # (B, 64, D_lm), (B, 64)
    finally:
        hook.remove()
    return captured["x"], cls_attention


@torch.no_grad()
def encode_pool(tower, images: np.ndarray, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode`` over a whole pool, in batches, without gradients."""
    out = [
        encode(tower, images[i : i + batch])
        for i in tqdm(range(0, len(images), batch), desc="encode", leave=False)
    ]
    return torch.cat([t for t, _ in out]), torch.cat([a for _, a in out])


def training_scenes(
    seed: int, step: int, batch_size: int, single_fraction: float, most: int | None = None
) -> list[world.Scene]:
    """The scenes of one training step: fresh ones every step (no image is seen twice), mostly general
    1-3 object scenes (at most ``most`` objects in a curriculum stage), some plain-background
    one-object scenes like generated images."""
    scenes = []
    for b in range(batch_size):
        index = step * batch_size + b
        rng = world.scene_rng("train", seed, index, stream="vlm")
        if rng.random() < single_fraction:
            scenes.append(world.single_object_scene(rng, size=None, position=None))
        else:
            scenes.append(vlm_recipes.curriculum_scene(rng, most))
    return scenes


class PatchHead(torch.nn.Module):
    """Training-only linear head: patch token (D_v) -> colour, shape, cell and centre-flag logits."""

    def __init__(self, width: int):
        super().__init__()
        self.sizes = (patch_labels.N_COLOUR_CLASSES, patch_labels.N_SHAPE_CLASSES, patch_labels.N_CELL_CLASSES, 2)
        self.linear = torch.nn.Linear(width, sum(self.sizes))

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed CE of (B, 64, D_v) patch tokens against (B, 4, 64) ``patch_labels`` targets."""
        logits = self.linear(tokens).split(self.sizes, dim=-1)  # 4 x (B, 64, C_i)
        return sum(F.cross_entropy(lg.flatten(0, 1), targets[:, i].flatten()) for i, lg in enumerate(logits))


class WordAlignment:
    """Training-only loss: a projected object patch names its colour and shape in the LM's own words.

    The projected token (D_lm) is scored against the LM's input embeddings and against its output
    head, both as classifiers over the vocabulary; the targets are the tokens " red", " circle", ...
    of the object under the patch. Visual tokens then share directions with the question's words
    (what an attention lookup like "the circle" -> its patches matches on) and with the answer's
    words (what a copying head writes out), which shortcuts the slowest part of training.
    """

    def __init__(self, tokenizer):
        word = lambda w: tokenizer(" " + w, add_special_tokens=False).input_ids[-1]
        ignore = [IGNORE]  # class 0 = background: no word
        self.colour_ids = torch.tensor(ignore + [word(c) for c in world.COLOURS])  # (1 + n_colours,)
        self.shape_ids = torch.tensor(ignore + [word(s) for s in world.SHAPES])  # (1 + n_shapes,)

    def loss(self, projected: torch.Tensor, targets: torch.Tensor, lm) -> torch.Tensor:
        """(B, 64, D_lm) projected patch tokens, (B, 4, 64) ``patch_labels`` targets -> scalar."""
        colour_words = self.colour_ids[targets[:, 0]].flatten()  # (B * 64,)
        shape_words = self.shape_ids[targets[:, 1]].flatten()  # (B * 64,)
        flat = projected.flatten(0, 1)  # (B * 64, D_lm)
        total = torch.zeros(())
        for classifier in (lm.get_input_embeddings().weight, lm.get_output_embeddings().weight):  # (V, D_lm)
            logits = flat @ classifier.T  # (B * 64, V)
            total = total + F.cross_entropy(logits, colour_words, ignore_index=IGNORE)
            total = total + F.cross_entropy(logits, shape_words, ignore_index=IGNORE)
        return total


def lookup_targets(
    scene: world.Scene, turns: list[world.QA], tokenizer, at_key_word: bool
) -> list[tuple[torch.Tensor, int | None] | None]:
    """Per turn, the (64,) patch mask its answer is read from and, ``at_key_word``, the token that
    looks it up (``toy.lookup_supervision``); None where the answer has no object."""
    out = []
    for qa in turns:
        objects = answer_objects(scene, qa)
        word = key_word(qa) if at_key_word else None
        if objects is None or (at_key_word and word is None):
            out.append(None)
        else:
            out.append((object_patches(objects), None if word is None else key_token(tokenizer, word)))
    return out


def choose_visual_tokens(
    tokens: torch.Tensor, attention: torch.Tensor, rng: random.Random, pruned_fraction: float
) -> torch.Tensor:
    """The kept visual tokens (K, D_v) of one image: all 64, or a pruned subset like serving keeps."""
    from encoders.pruning import PRUNERS
    from triptych.types import VisionFeatures

    n = tokens.shape[0]
    if rng.random() >= pruned_fraction:
        return tokens
    k = rng.randint(6, n - 1)
    if k >= 40 and rng.random() < 0.3:
        keep = sorted(rng.sample(range(n), k))  # random subset, spatial order
        return tokens[keep]
    return PRUNERS["cls_attention"](VisionFeatures(tokens, attention.detach()), k).tokens  # (K, D_v) spatial order


LOOKUP_HEAD = 0  # the head whose attention ``--lookup-loss`` supervises

# How often each question type is asked in training. "describe" answers are ~20 tokens where the
# others are one word: at equal frequency they would carry most of the loss.
# "count" is learnt early from the mean of the visual tokens; the lookups ("the circle" -> its
# patches) are what takes long, so they are asked more.
QTYPE_WEIGHTS = {"colour": 1.0, "shape": 1.0, "count": 0.5, "exists": 1.0, "position": 1.0, "describe": 0.3}


def sample_turns(scene: world.Scene, rng: random.Random, n_turns: int, distinct: bool = False) -> list[world.QA]:
    """``n_turns`` question/answer pairs, question type by ``QTYPE_WEIGHTS``, phrasing from ``rng``;
    ``distinct``: no question twice (fewer turns once the scene's questions run out)."""
    by_type: dict[str, list[world.QA]] = {}
    for qa in world.questions(scene, rng):
        by_type.setdefault(qa.qtype, []).append(qa)
    qtypes, weights = list(QTYPE_WEIGHTS), list(QTYPE_WEIGHTS.values())
    turns = []
    for _ in range(n_turns):
        if distinct:
            open_types = [q for q in qtypes if by_type.get(q)]
            if not open_types:
                break
            pool = by_type[rng.choices(open_types, [QTYPE_WEIGHTS[q] for q in open_types])[0]]
            qa = pool.pop(rng.randrange(len(pool)))
        else:
            qa = rng.choice(by_type[rng.choices(qtypes, weights)[0]])
        if rng.random() < 0.3:
            qa = replace(qa, question=qa.question[0].upper() + qa.question[1:])
        turns.append(qa)
    return turns


def collate(
    seqs: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to (B, T): ids, labels (IGNORE on padding), attention mask."""
    T = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, (i, lab) in enumerate(seqs):
        ids[b, : len(i)] = torch.tensor(i)
        labels[b, : len(lab)] = torch.tensor(lab)
        mask[b, : len(i)] = 1
    return ids, labels, mask


def forward_loss(
    lm, projector, ids, labels, mask, visual_flat, image_token_id
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CE over answer tokens, and the (B, T, V) logits."""
    embeds = embed_inputs(ids, projector(visual_flat), lm.get_input_embeddings(), image_token_id)  # (B, T, D)
    logits = lm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, T, V)
    # position t predicts token t + 1
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
    return loss, logits


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (a recipe sets some of their defaults, see ``parse_args``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=sorted(vlm_recipes.RECIPES), default="shipped",
                        help="named flag defaults (toy.vlm_recipes); explicit flags still win")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoint + metrics.jsonl (default: <tmp>/toy-vlm-runs/<recipe>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --run-dir's checkpoint (without it a run starts afresh)")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="checkpoint and exit after this step, before --steps (continue with --resume)")
    parser.add_argument("--curriculum", default="",
                        help="'1:0.08,2:0.3' = at most 1 object until 8%% of the steps, 2 until 30%%, then 1-3")
    parser.add_argument("--distinct-turns", action=argparse.BooleanOptionalAction, default=False,
                        help="never ask the same question twice about one image")
    parser.add_argument("--image-first-fraction", type=float, default=0.5,
                        help="chats with the image before the question (the rest after it)")
    parser.add_argument("--warmup-fraction", type=float, default=0.05, help="linear LR warm-up, then cosine")
    parser.add_argument("--min-lr-fraction", type=float, default=0.05, help="LR at the end of the cosine")
    parser.add_argument("--clip", type=Path, default=TOY_CLIP_DIR)
    parser.add_argument("--out", type=Path, default=TOY_VLM_DIR)
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (each with 1..--max-turns questions)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--single-fraction", type=float, default=0.1, help="plain one-object scenes")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rope-theta", type=float, default=10000.0)
    parser.add_argument("--max-turns", type=int, default=12, help="question/answer turns per image (1..N)")
    parser.add_argument("--pruned-fraction", type=float, default=0.3, help="sequences with pruned visual tokens")
    parser.add_argument("--train-tower", action=argparse.BooleanOptionalAction, default=True,
                        help="fine-tune the vision tower (with the per-patch and [CLS]-attention losses)")
    parser.add_argument("--tower-lr-scale", type=float, default=1.0)
    parser.add_argument("--patch-loss", type=float, default=1.0,
                        help="weight of the per-patch colour/shape/cell/centre loss (needs --train-tower)")
    parser.add_argument("--lookup-loss", type=float, default=1.0,
                        help="weight of the attention supervision of the LM's lookups (toy.lookup_supervision)")
    parser.add_argument("--lookup-at", choices=("key", "answer"), default="key",
                        help="supervise the first layer at the question's key word, or the last at the answer")
    parser.add_argument("--key-answer-loss", type=float, default=0.0,
                        help="weight of reading the answer from the key word's residual (lookup_supervision.key_answer_loss)")
    parser.add_argument("--key-answer-layer", type=int, default=2, help="the layer whose input that residual is")
    parser.add_argument("--relay-loss", type=float, default=0.0,
                        help="weight of the answer position's attention on the key word (lookup_supervision.relay_loss)")
    parser.add_argument("--relay-layer", type=int, default=2, help="the layer of the supervised relay head (head 0)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from another run dir's checkpoint weights (fresh optimizer and schedule)")
    parser.add_argument("--word-loss", type=float, default=0.5,
                        help="weight of the projected-patch-names-its-object loss (WordAlignment)")
    parser.add_argument("--attention-loss", type=float, default=0.5,
                        help="weight of the [CLS]-attention-on-objects loss (needs --train-tower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the LM is small, per-op overhead wins)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-items", type=int, default=600, help="held-out items for the final evaluation")
    parser.add_argument("--val-items", type=int, default=500, help="validation items for --eval-every")
    return parser


def parse_args(argv: list[str] | None) -> tuple[str, argparse.Namespace]:
    """(recipe name, flags): the recipe's values are the defaults, explicit flags win."""
    parser = build_parser()
    recipe = parser.parse_known_args(argv)[0].recipe
    parser.set_defaults(**vlm_recipes.RECIPES[recipe])
    return recipe, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from transformers import LlamaForCausalLM

    from decoders.chat_template import ChatPromptBuilder
    from encoders.open_clip_tower import OpenClipTower, ProjectorMLP

    recipe, args = parse_args(argv)
    stages = vlm_recipes.parse_curriculum(args.curriculum)
    run = RunDir(args.run_dir or vlm_recipes.RUNS / recipe)
    if not args.resume:
        run.clear()  # a fresh run replaces the directory's checkpoint and log

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    tokenizer = build_toy_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    builder = ChatPromptBuilder(tokenizer, "<image>", image_token_id)

    visual, clip_cfg = load_clip_visual(args.clip)  # gradients switched on below with --train-tower
    width = clip_cfg["vision_cfg"]["width"]
    projector = ProjectorMLP(width, args.hidden)
    tower = OpenClipTower(visual, projector, PREPROCESS_CFG, model_id="toy-vlm", revision="training")
    lm = LlamaForCausalLM(llama_config(len(tokenizer), args.hidden, args.layers, args.heads, args.rope_theta))
    lookup_layer = 0 if args.lookup_at == "key" else -1
    probe = HeadAttentionProbe(lm.model.layers[lookup_layer].self_attn, LOOKUP_HEAD)
    key_residual = LayerInput(lm.model.layers[args.key_answer_layer])
    relay = HeadAttentionProbe(lm.model.layers[args.relay_layer].self_attn, 0) if args.relay_loss else None
    readout = lambda h: lm.lm_head(lm.model.norm(h))  # (N, D) -> (N, V), the LM's own output head

    if args.train_tower:
        visual.requires_grad_(True)

    val = world.vqa_items(
        args.val_items, split="val", qtypes=("colour", "shape", "count", "exists", "position")
    )  # the validation split: the held-out test items stay unseen until the final evaluation
    val_images = np.stack([np.asarray(it.image) for it in val])

    head = PatchHead(width)
    words = WordAlignment(tokenizer)
    groups = [{"params": list(projector.parameters()) + list(lm.parameters()) + list(head.parameters())}]
    if args.train_tower:
        groups.append({"params": list(visual.parameters()), "lr": args.lr * args.tower_lr_scale})
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup, floor = max(1, round(args.steps * args.warmup_fraction)), args.min_lr_fraction
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup) * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / args.steps))))
        ),
    )
    rng = random.Random(args.seed)
    modules = {"visual": visual, "projector": projector, "lm": lm, "patch_head": head}
    if args.init_from is not None and not args.resume:
        RunDir(args.init_from).load_modules(modules)
    first = run.restore(modules, opt, sched, rng) if args.resume else 0
    (run.path / "args.json").write_text(json.dumps(vars(args), default=str, indent=2) + "\n")
    lm.train()
    projector.train()
    losses: list[float] = []
    last = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
    bar = tqdm(range(first, last), desc=f"toy-vlm {recipe}", initial=first, total=args.steps)
    for step in bar:
        most = vlm_recipes.max_objects(stages, step / args.steps)
        scenes = training_scenes(args.seed, step, args.batch_size, args.single_fraction, most)  # fresh every step
        images = np.stack([world.render_array(scene) for scene in scenes])  # (B, 64, 64, 3)
        with torch.set_grad_enabled(args.train_tower):
            batch_feats, batch_attention = encode(tower, images)  # (B, 64, D_v), (B, 64)
        seqs, visual_rows, lookups = [], [], []
        for b, scene in enumerate(scenes):
            kept = choose_visual_tokens(batch_feats[b], batch_attention[b], rng, args.pruned_fraction)  # (K, D_v)
            turns = sample_turns(scene, rng, rng.randint(1, args.max_turns), args.distinct_turns)
            seqs.append(build_sequence(builder, tokenizer, [(qa.question, qa.answer) for qa in turns],
                                       kept.shape[0], image_first=rng.random() < args.image_first_fraction))  # fmt: skip
            visual_rows.append(kept)
            unpruned = kept.shape[0] == batch_feats.shape[1]
            lookups.append(lookup_targets(scene, turns, tokenizer, args.lookup_at == "key") if unpruned else None)
        ids, labels, mask = collate(seqs, tokenizer.pad_token_id)
        answer_loss, _ = forward_loss(lm, projector, ids, labels, mask, torch.cat(visual_rows), image_token_id)
        lookup = torch.zeros(())
        if args.lookup_loss:
            lookup = lookup_loss(probe.weights(mask), ids, labels, lookups, image_token_id, IGNORE)
        key_answer = relayed = torch.zeros(())
        keys = key_lookups(ids, labels, lookups, IGNORE)  # (row, key word, answer position) per turn
        if args.key_answer_loss:
            key_answer = key_answer_loss(key_residual.hidden, readout, ids, keys)
        if relay is not None:
            relayed = relay_loss(relay.weights(mask), keys)
        targets = np.stack([patch_labels.patch_targets(s) for s in scenes])  # (B, 4, 64)
        word_loss = words.loss(projector(batch_feats), torch.from_numpy(targets), lm)
        patch_loss = attention_loss = torch.zeros(())
        if args.train_tower:
            patch_loss = head.loss(batch_feats, torch.from_numpy(targets))
            on_objects = torch.from_numpy(patch_labels.object_attention_target(targets))  # (B, 64)
            attention_loss = -(on_objects * batch_attention.clamp_min(1e-8).log()).sum(-1).mean()
        loss = (answer_loss + args.lookup_loss * lookup + args.key_answer_loss * key_answer
                + args.relay_loss * relayed + args.word_loss * word_loss
                + args.patch_loss * patch_loss + args.attention_loss * attention_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(answer=f"{answer_loss.item():.4f}", lookup=f"{lookup.item():.3f}", words=f"{word_loss.item():.3f}", patch=f"{patch_loss.item():.3f}",
                        attention=f"{attention_loss.item():.3f}", tokens=ids.shape[1])
        losses.append(answer_loss.item())
        if args.eval_every and (step + 1) % args.eval_every == 0:
            val_feats, _ = encode_pool(tower, val_images)
            acc = quick_eval(lm, projector, builder, tokenizer, val, val_feats, image_token_id)
            lm.train()
            projector.train()
            run.log({"step": step + 1, "answer_loss": round(float(np.mean(losses)), 4), "max_objects": most,
                     "lr": sched.get_last_lr()[0], "val": acc})  # fmt: skip
            losses.clear()
            tqdm.write(f"step {step + 1}: answer loss {answer_loss.item():.4f}  val (teacher-forced) {acc}")
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == last:
            run.save(step + 1, modules, opt, sched, rng)
    if last < args.steps:
        print(f"stopped after step {last} of {args.steps}; continue with --resume", flush=True)
        return

    lm.eval()
    projector.eval()
    save_vlm(args.out, tokenizer, visual, projector, lm, clip_cfg, args.hidden)
    train_s, train_cpu_s = run.seconds()

    vlm = load_vlm(args.out)  # evaluate what was written, through the real loaders and engines
    items = world.vqa_items(args.eval_items, split="test")
    report = {"recipe": recipe, "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu_s, 1),
              "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
              "heldout_items": len(items), "heldout_exact_match": {}}  # fmt: skip
    for ratio in (1.0, 0.5, 0.25):
        acc = evaluate_vqa(vlm, items, keep_ratio=ratio, pruning_method="cls_attention")
        report["heldout_exact_match"][f"keep_{ratio}"] = {k: round(v, 4) for k, v in acc.items()}
        print(f"keep {ratio}: {acc}", flush=True)
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


@torch.no_grad()
def quick_eval(lm, projector, builder, tokenizer, items, feats, image_token_id) -> dict[str, float]:
    """Teacher-forced exact match (every answer token argmax-right) on single-turn items: per qtype,
    per qtype and object count (``"colour@3"``) and ``"all"``."""
    lm.eval()
    projector.eval()
    seqs = [build_sequence(builder, tokenizer, [(it.question, it.answer)], feats.shape[1]) for it in items]
    ids, labels, mask = collate(seqs, tokenizer.pad_token_id)
    _, logits = forward_loss(lm, projector, ids, labels, mask, feats.flatten(0, 1), image_token_id)
    pred, gold = logits[:, :-1].argmax(-1), labels[:, 1:]  # (B, T-1)
    ok = ((pred == gold) | (gold == IGNORE)).all(dim=1).tolist()  # (B,)
    out: dict[str, list[bool]] = {}
    for it, o in zip(items, ok):
        for key in (it.qtype, f"{it.qtype}@{len(it.scene.objects)}", "all"):
            out.setdefault(key, []).append(o)
    return {q: round(sum(v) / len(v), 3) for q, v in sorted(out.items())}


def save_vlm(out: Path, tokenizer, visual, projector, lm, clip_cfg: dict, hidden: int) -> None:
    """Write the ``open_clip_llava`` directory (replacing ``out``)."""
    from models.sources import open_clip_llava as src

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    out.chmod(0o755)
    contiguous = lambda m: {k: v.detach().float().contiguous() for k, v in m.state_dict().items()}
    save_file(contiguous(visual), out / src.VISION_WEIGHTS)
    save_file(contiguous(projector), out / src.PROJECTOR_WEIGHTS)
    lm.save_pretrained(out / "language_model")
    tokenizer.save_pretrained(out / "language_model")
    vision_cfg = clip_cfg["vision_cfg"]
    manifest = {
        "source": src.NAME,
        "format_version": src.FORMAT_VERSION,
        "model_id": "toy-vlm",
        "open_clip_config": clip_cfg,
        "preprocess_cfg": PREPROCESS_CFG,
        "image_size": vision_cfg["image_size"],
        "num_patches": (vision_cfg["image_size"] // vision_cfg["patch_size"]) ** 2,
        "projector": {"type": "mlp2x_gelu", "in_features": vision_cfg["width"], "out_features": hidden},
        "language_model": "language_model",
        "image_token": "<image>",
    }
    (out / src.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for path in out.rglob("*"):  # some savers write owner-only files; the weights are meant to be shared
        path.chmod(0o755 if path.is_dir() else 0o644)


if __name__ == "__main__":
    main()
