"""The toy CLIP: an open_clip model from a JSON config, a word-level tokenizer, and zero-shot scoring.

The checkpoint is open_clip's own ``local-dir`` format, so the stock open_clip entry points load it
unchanged (no Triptych code needed)::

    toy/checkpoints/toy-clip/
        open_clip_config.json        {"model_cfg": CLIP_CONFIG, "preprocess_cfg": PREPROCESS_CFG}
        open_clip_model.safetensors  the whole CLIP state dict
        tokenizer.json, tokenizer_config.json   word-level HF tokenizer (the toy world's vocabulary)

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:toy/checkpoints/toy-clip")
    tokenizer = open_clip.get_tokenizer("local-dir:toy/checkpoints/toy-clip")

``text_cfg.hf_tokenizer_name`` makes ``open_clip.get_tokenizer`` read the tokenizer from the same
directory; the text tower pools at the first ``</s>`` (``pool_type: "eos"``). ``load_clip`` wraps
this as a ``ToyClip`` with ``encode_images`` / ``encode_texts`` / ``clip_score`` / ``classify``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import CHECKPOINTS, world

TOY_CLIP_DIR = CHECKPOINTS / "toy-clip"

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PAD, UNK, EOS = "<pad>", "<unk>", "</s>"
CONTEXT_LENGTH = 32  # longest caption (3 objects) is 30 tokens with </s>

PREPROCESS_CFG: dict[str, Any] = {
    "size": world.IMAGE_SIZE,
    "mean": list(OPENAI_MEAN),
    "std": list(OPENAI_STD),
    "interpolation": "bicubic",
    "resize_mode": "squash",
    "fill_color": 0,
}


def vocabulary() -> list[str]:
    """Every word of the toy world's captions, prompts and questions, special tokens first (fixed order)."""
    words = {"a", "an", "at", "the", "and", "in", "of", "on", "with", "image", "picture", "photo", "shape",
             "shapes", "-", ",", ".", "?", "top", "bottom", "left", "right", "center", "centre", "middle"}  # fmt: skip
    words |= set(world.SHAPES) | set(world.COLOURS) | set(world.SIZES) | set(world.NUMBERS)
    return [PAD, UNK, EOS] + sorted(words)


def clip_config(vocab_size: int | None = None, width: int = 96, layers: int = 3) -> dict[str, Any]:
    """open_clip ``model_cfg``: ViT 64px / patch 8 (64 patch tokens), ``width``, ``layers``; text 2 layers."""
    return {
        "embed_dim": 96,
        "quick_gelu": False,
        "vision_cfg": {"image_size": world.IMAGE_SIZE, "patch_size": 8, "width": width, "layers": layers,
                       "head_width": 32, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": vocab_size or len(vocabulary()),
                     "width": 64, "heads": 2, "layers": 2, "mlp_ratio": 2.0,
                     "pool_type": "eos", "eos_id": 2, "pad_id": 0,
                     "hf_tokenizer_name": "toy-clip-words"},  # any name: local-dir reads the dir's tokenizer
    }  # fmt: skip


def build_clip_tokenizer():
    """Word-level tokenizer over ``vocabulary()``: lower-cases, splits on spaces and punctuation, appends </s>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=EOS, model_max_length=CONTEXT_LENGTH
    )


def create_clip(model_cfg: dict[str, Any] | None = None, preprocess_cfg: dict[str, Any] | None = None):
    """A randomly initialised open_clip CLIP built from the config through open_clip's ``local-dir`` schema."""
    import open_clip

    config = {"model_cfg": model_cfg or clip_config(), "preprocess_cfg": preprocess_cfg or PREPROCESS_CFG}
    with tempfile.TemporaryDirectory(prefix="toy-clip-") as tmp:
        (Path(tmp) / "open_clip_config.json").write_text(json.dumps(config))
        logging.disable(logging.WARNING)  # "no pretrained weights": on purpose
        try:
            return open_clip.create_model(f"local-dir:{tmp}", load_weights=False, device="cpu")
        finally:
            logging.disable(logging.NOTSET)


def save_clip(model: torch.nn.Module, out_dir: Path | str, model_cfg: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (+ config + tokenizer) as an open_clip local-dir checkpoint."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg or clip_config(), "preprocess_cfg": PREPROCESS_CFG}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "open_clip_model.safetensors")
    build_clip_tokenizer().save_pretrained(out)
    for path in out.rglob("*"):  # safetensors writes owner-only files; the weights are meant to be shared
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def pixels(images: Sequence[Image.Image] | np.ndarray) -> torch.Tensor:
    """(B, 3, 64, 64) normalised pixels, identical to open_clip's eval transform on 64x64 images.

    Accepts PIL images or a uint8 array (B, 64, 64, 3); training uses the array path (no PIL).
    """
    if not isinstance(images, np.ndarray):
        images = np.stack([np.asarray(im.convert("RGB").resize((world.IMAGE_SIZE,) * 2, Image.Resampling.BICUBIC)
                                      if im.size != (world.IMAGE_SIZE,) * 2 else im.convert("RGB"))
                           for im in images])  # fmt: skip
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class ToyClip:
    """A loaded toy CLIP: the open_clip model, its eval transform and tokenizer."""

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, E) L2-normalised image embeddings."""
        x = torch.stack([self.preprocess(im.convert("RGB")) for im in images])  # (B, 3, 64, 64)
        return self.model.encode_image(x, normalize=True)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, E) L2-normalised text embeddings."""
        return self.model.encode_text(self.tokenizer(list(texts)), normalize=True)

    def clip_score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """(B,) CLIP score per pair: 100 * max(cos(image_i, text_i), 0) (Hessel et al. 2021, w = 1)."""
        cos = (self.encode_images(images) * self.encode_texts(texts)).sum(-1)  # (B,)
        return 100.0 * cos.clamp(min=0)

    def classify(self, images: Sequence[Image.Image], candidates: Sequence[str]) -> list[int]:
        """Index of the best-matching candidate text for each image."""
        sims = self.encode_images(images) @ self.encode_texts(candidates).T  # (B, C)
        return sims.argmax(dim=1).tolist()


def load_clip(path: Path | str = TOY_CLIP_DIR) -> ToyClip:
    """Load a toy-CLIP checkpoint directory with open_clip's stock ``local-dir`` loaders (eval, CPU)."""
    import open_clip

    path = Path(path)
    if not (path / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"no toy CLIP at {path} (run `python -m toy.train_clip`)")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}", device="cpu")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    return ToyClip(model.eval(), preprocess, tokenizer)


# ---------------------------------------------------------------------------------------------
# Zero-shot evaluation


def class_prompts() -> list[tuple[str, str, str]]:
    """The 30 (prompt, colour, shape) classes: "a red circle", ..."""
    return [(f"a {c} {s}", c, s) for s in world.SHAPES for c in world.COLOURS]


def zero_shot_single(
    clip: ToyClip, n: int = 300, split: world.Split = "test", seed: int = 0
) -> dict[str, float]:
    """30-way colour x shape classification of held-out single-object images (random cell and size).

    Returns accuracy of the pair, of the colour and of the shape.
    """
    items = world.t2i_items(n, split=split, seed=seed, with_position=True, with_size=True)
    classes = class_prompts()
    pred: list[int] = []
    for i in range(0, n, 128):
        pred += clip.classify([world.render(it.scene) for it in items[i : i + 128]], [c[0] for c in classes])
    both = np.mean([(classes[p][1], classes[p][2]) == (it.colour, it.shape) for p, it in zip(pred, items)])
    colour = np.mean([classes[p][1] == it.colour for p, it in zip(pred, items)])
    shape = np.mean([classes[p][2] == it.shape for p, it in zip(pred, items)])
    return {"both": float(both), "colour": float(colour), "shape": float(shape)}


def caption_alternatives(scene: world.Scene) -> list[str]:
    """The true caption first, then every caption with one object's colour or shape changed."""
    from dataclasses import replace

    out = [world.caption(scene)]
    used = {o.shape for o in scene.objects}
    for i, o in enumerate(scene.objects):
        variants = [replace(o, colour=c) for c in world.COLOURS if c != o.colour]
        variants += [replace(o, shape=s) for s in world.SHAPES if s not in used]
        for v in variants:
            objects = scene.objects[:i] + (v,) + scene.objects[i + 1 :]
            out.append(world.caption(replace(scene, objects=objects)))
    return out


def zero_shot_captions(clip: ToyClip, n: int = 200, split: world.Split = "test", seed: int = 0) -> float:
    """Fraction of held-out scenes whose true caption beats every one-attribute-changed alternative."""
    right = 0
    for i in range(n):
        scene = world.make_scene(split, i, seed)
        right += clip.classify([world.render(scene)], caption_alternatives(scene))[0] == 0
    return right / n
