"""Model profiles: ``TRIPTYCH_PROFILE`` names a set of checkpoints and which one serves chat.

``PROFILES`` is the registry: a ``Profile`` knows the checkpoints it provides under the model root
(``TRIPTYCH_MODEL_DIR``), creating them first if it generates them, and its default chat model.
``tiny`` provides ``tiny-open-clip-llava`` (default) and ``tiny-hf-llava``, plus ``tiny-sd`` for images and
``tiny-clip`` for embeddings (``bench`` reuses ``tiny-clip``). ``bench`` and ``toy``
are one more entry each; ``toy`` serves the weights trained on the toy world and shipped in the
repository under ``toy/checkpoints/`` (it ignores the model root). A chat model may also be any checkpoint directory (a name under the model
root, or a path), so a real LLaVA checkpoint needs no code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Profile:
    models: tuple[str, ...]  # names of the checkpoints this profile provides
    ensure: Callable[[Path], dict[str, Path]]  # model root -> {name: checkpoint dir}, created on demand
    chat_model: str  # the default chat model, one of ``models``
    image_model: str  # the default text-to-image model, one of ``models``
    embedding_model: str  # the default joint image-text embedder (an open_clip directory), one of ``models``


def _ensure_tiny(model_dir: Path) -> dict[str, Path]:
    from .tiny import ensure_tiny_models
    from .tiny_clip import TINY_CLIP, ensure_tiny_clip
    from .tiny_diffusion import ensure_tiny_diffusion

    return {**ensure_tiny_models(model_dir), "tiny-sd": ensure_tiny_diffusion(model_dir),
            TINY_CLIP: ensure_tiny_clip(model_dir)}


def _ensure_bench(model_dir: Path) -> dict[str, Path]:
    from .bench import ensure_bench_models
    from .bench_diffusion import ensure_bench_diffusion
    from .tiny_clip import TINY_CLIP, ensure_tiny_clip
    from .tiny_diffusion import ensure_tiny_diffusion

    return {
        **ensure_bench_models(model_dir),
        "bench-sd": ensure_bench_diffusion(model_dir),
        "tiny-sd": ensure_tiny_diffusion(model_dir),
        TINY_CLIP: ensure_tiny_clip(model_dir),
    }


# The toy checkpoints are data shipped beside the code (a directory, not an import of the ``toy``
# package): ``<repo or site-packages>/toy/checkpoints/<name>``.
TOY_CHECKPOINTS = Path(__file__).resolve().parents[1] / "toy" / "checkpoints"
TOY_MODELS = ("toy-vlm", "toy-sd", "toy-clip")


def _ensure_toy(model_dir: Path) -> dict[str, Path]:
    """The shipped toy checkpoints that are present; ``model_dir`` is not used (nothing is generated)."""
    return {name: TOY_CHECKPOINTS / name for name in TOY_MODELS if (TOY_CHECKPOINTS / name).is_dir()}


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        models=("tiny-open-clip-llava", "tiny-hf-llava", "tiny-sd", "tiny-clip"),
        ensure=_ensure_tiny,
        chat_model="tiny-open-clip-llava",
        image_model="tiny-sd",
        embedding_model="tiny-clip",
    ),
    "toy": Profile(
        models=TOY_MODELS,
        ensure=_ensure_toy,
        chat_model="toy-vlm",
        image_model="toy-sd",
        embedding_model="toy-clip",
    ),
    "bench": Profile(
        models=("bench-hf-llava", "bench-sd", "tiny-sd", "tiny-clip"),
        ensure=_ensure_bench,
        chat_model="bench-hf-llava",
        image_model="bench-sd",
        embedding_model="tiny-clip",
    ),
}


def resolve_chat_model(profile: str, model_dir: Path | str, chat_model: str | None = None) -> Path:
    """Directory of the chat checkpoint to serve.

    ``chat_model`` None means the profile's default; otherwise it is a model name of the profile
    (e.g. ``"tiny-hf-llava"``, created on demand), a directory name under ``model_dir``, or a path.
    """
    spec = _profile(profile)
    return _resolve(spec, profile, Path(model_dir), spec.chat_model if chat_model is None else chat_model)


def resolve_image_model(profile: str, model_dir: Path | str, image_model: str | None = None) -> Path:
    """Directory of the text-to-image (Stable-Diffusion-format) checkpoint to serve; as above."""
    spec = _profile(profile)
    return _resolve(spec, profile, Path(model_dir), spec.image_model if image_model is None else image_model)


def resolve_embedding_model(profile: str, model_dir: Path | str, embedding_model: str | None = None) -> Path:
    """Directory of the joint image-text embedder (an open_clip ``local-dir`` checkpoint); as above."""
    spec = _profile(profile)
    name = spec.embedding_model if embedding_model is None else embedding_model
    return _resolve(spec, profile, Path(model_dir), name)


def _profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise ValueError(f"unknown model profile {profile!r}; known profiles: {sorted(PROFILES)}")
    return PROFILES[profile]


def _resolve(spec: Profile, profile: str, model_dir: Path, name: str) -> Path:
    if name in spec.models:
        provided = spec.ensure(model_dir)
        if name not in provided:
            raise ValueError(f"model {name!r} of profile {profile!r} is not available (its checkpoint is missing)")
        return provided[name]
    for candidate in (model_dir / name, Path(name).expanduser()):
        if candidate.is_dir():
            return candidate
    raise ValueError(
        f"unknown model {name!r} for profile {profile!r}: expected one of {list(spec.models)} "
        f"or a checkpoint directory (absolute or under {model_dir})"
    )
