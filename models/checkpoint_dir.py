"""Generated checkpoint directories, built once: temp dir + atomic rename, stamped with a recipe.

Used by every profile that makes its weights from a recipe (tiny, bench). A directory whose
marker names another recipe version is rebuilt; concurrent builders (threads or processes) never
expose a half-written directory, and the caller's torch RNG state is left untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

MARKER = ".triptych_recipe.json"
_BUILD_LOCK = threading.Lock()  # builders seed torch's global RNG: one at a time per process


def ensure_checkpoint(root: Path, name: str, build: Callable[[Path], None], recipe_version: int) -> Path:
    """Return ``root / name``, building it with ``build(directory)`` first unless it is current."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if is_current(final, name, recipe_version):
        return final
    with _BUILD_LOCK:
        if not is_current(final, name, recipe_version):
            build_and_publish(root, name, build, recipe_version)
    return final


def is_current(path: Path, name: str, recipe_version: int) -> bool:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"name": name, "recipe_version": recipe_version}


def build_and_publish(root: Path, name: str, build: Callable[[Path], None], recipe_version: int) -> None:
    """Build into a temp dir beside the final place, then rename it there (atomic)."""
    import torch

    final = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        with torch.random.fork_rng(devices=[]):
            build(tmp)
        (tmp / MARKER).write_text(json.dumps({"name": name, "recipe_version": recipe_version}))
        _make_readable(tmp)
        if final.exists() and not is_current(final, name, recipe_version):  # stale recipe: move it aside
            stale = root / f".{name}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            except FileNotFoundError:
                pass
        try:
            os.rename(tmp, final)  # fails if another process published first
        except OSError:
            if not is_current(final, name, recipe_version):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _make_readable(path: Path) -> None:
    """mkdtemp and some savers create owner-only files; the models are meant to be shared."""
    for dirpath, _, filenames in os.walk(path):
        os.chmod(dirpath, 0o755)
        for filename in filenames:
            os.chmod(os.path.join(dirpath, filename), 0o644)
