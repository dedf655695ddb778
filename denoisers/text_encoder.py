"""TextEncoderEngine: prompt -> CLIP text embeddings (T, D), the ``text_encode`` stage of text-to-image.

Loads only the ``text_encoder/`` (transformers ``CLIPTextModel``) and ``tokenizer/`` folders of an
SD-format directory; the UNet, VAE and diffusers are never touched, so a text-encoder replica holds
just the weights it runs::

    engine = TextEncoderEngine.from_pretrained("toy/checkpoints/toy-sd")
    cond = engine.encode_prompt("a red circle")              # (T, D)
    uncond = engine.encode_prompt("", allow_empty=True)      # (T, D)   (or a negative prompt)
    engine.info()                                            # TextEncoderInfo for cache keys

The embeddings are what ``StableDiffusionPipeline.encode_prompt`` gives (last hidden state of the
prompt padded to the tokenizer's max length). Prompts longer than the text encoder takes are
*rejected* (RequestError on the field), never silently truncated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from triptych.errors import RequestError
from triptych.types import TextEncoderInfo

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer

_WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin")  # what the revision digest covers


def _files_digest(paths: Sequence[Path], length: int = 16) -> str:
    """Short sha256 over names and bytes of ``paths`` (in order), for cache keys."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(8 * 2**20):
                digest.update(chunk)
    return digest.hexdigest()[:length]


class TextEncoderEngine:
    """CLIP text encoder + tokenizer of an SD-format model.

    Args:
        tokenizer: the model's CLIP tokenizer (``model_max_length`` = the encoder's context).
        text_encoder: the model's ``CLIPTextModel``.
        model_id: the model's name, for cache keys and messages.
        revision: identifies the text encoder weights and config (cache keys of text embeddings).
        tokenizer_id: identifies the tokenizer files (cache keys of text embeddings).
    """

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        *,
        model_id: str,
        revision: str,
        tokenizer_id: str,
    ):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval()
        self.model_id = model_id
        self.revision = revision
        self.tokenizer_id = tokenizer_id

    @classmethod
    def from_pretrained(
        cls, model_dir: Path | str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> TextEncoderEngine:
        """Load ``text_encoder/`` and ``tokenizer/`` of an SD-format directory offline (transformers only)."""
        from transformers import CLIPTextModel, CLIPTokenizer

        model_dir = Path(model_dir).resolve()
        tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(
            model_dir, subfolder="text_encoder", dtype=dtype, local_files_only=True
        ).to(device)
        text_encoder_files = sorted(
            p for p in (model_dir / "text_encoder").iterdir() if p.suffix in _WEIGHT_SUFFIXES
        )
        tokenizer_files = sorted(p for p in (model_dir / "tokenizer").iterdir() if p.is_file())
        return cls(
            tokenizer,
            text_encoder,
            model_id=model_dir.name,
            revision=_files_digest(text_encoder_files),
            tokenizer_id=_files_digest(tokenizer_files),
        )

    def info(self) -> TextEncoderInfo:
        """What prompt-embedding cache keys need: model id, text encoder revision, tokenizer id."""
        return TextEncoderInfo(model_id=self.model_id, revision=self.revision, tokenizer_id=self.tokenizer_id)

    @property
    def max_prompt_tokens(self) -> int:
        """The most prompt tokens the text encoder takes (its context minus BOS and EOS)."""
        return int(self.tokenizer.model_max_length) - 2

    def encode_prompt(self, text: str, *, field: str = "prompt", allow_empty: bool = False) -> torch.Tensor:
        """CLIP last hidden state of ``text`` padded to the tokenizer's max length: (T, D) float32 on CPU.

        Raises RequestError(field) for a non-string, for an empty prompt (unless ``allow_empty``,
        as for negative prompts) and for a prompt longer than ``max_prompt_tokens``: it is
        rejected, not truncated.
        """
        if not isinstance(text, str):
            raise RequestError(field, f"must be a string, got {type(text).__name__}")
        if not allow_empty and not text.strip():
            raise RequestError(field, "must not be empty")
        max_length = int(self.tokenizer.model_max_length)
        ids = self.tokenizer(text, truncation=False).input_ids  # BOS + tokens + EOS
        if len(ids) > max_length:
            raise RequestError(
                field,
                f"is {len(ids) - 2} tokens; the text encoder of {self.model_id!r} takes at most "
                f"{self.max_prompt_tokens} (longer prompts are rejected, not truncated)",
            )
        inputs = self.tokenizer(text, padding="max_length", max_length=max_length, return_tensors="pt")
        attention_mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = inputs.attention_mask.to(self.text_encoder.device)  # (1, T)
        with torch.inference_mode():
            out = self.text_encoder(
                inputs.input_ids.to(self.text_encoder.device), attention_mask=attention_mask
            )  # last_hidden_state (1, T, D)
        return out.last_hidden_state[0].float().cpu()  # (T, D)
