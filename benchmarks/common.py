"""What every benchmark's command line shares: the common options and the process setup."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_common_arguments(parser: argparse.ArgumentParser, quick_help: str, default_repeats: int) -> None:
    """--quick, --repeats, --profile, --model, --model-dir, --threads, --no-serve, --json."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"measured rounds (default {default_repeats}; quick 1)")
    parser.add_argument("--profile", default=None, help="model profile (default bench; quick tiny)")
    parser.add_argument("--model", default=None, help="a model of the profile or a checkpoint dir")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model root (default TRIPTYCH_MODEL_DIR or ~/.cache/triptych/models)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, in-process and in Serve replicas (default: all cores)")
    parser.add_argument("--no-serve", action="store_true", help="skip the Serve measurements (no Ray)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")


def resolve_common_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser, default_repeats: int) -> None:
    args.repeats = args.repeats or (1 if args.quick else default_repeats)
    args.profile = args.profile or ("tiny" if args.quick else "bench")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")


def configure_process(threads: int | None) -> int:
    """Offline, quiet, and the same torch thread count here and in Serve replicas (inherited env)."""
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
                       "TOKENIZERS_PARALLELISM": "false"}.items():  # fmt: skip
        os.environ.setdefault(key, value)
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    # Ray gives a replica with fractional num_cpus OMP_NUM_THREADS=1 unless it is already set.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    from transformers.utils import logging as hf_logging

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return threads


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def model_root(args: argparse.Namespace) -> Path:
    """--model-dir, else TRIPTYCH_MODEL_DIR, else the default model root."""
    from triptych.config import DEFAULT_MODEL_DIR

    return args.model_dir or Path(os.environ.get("TRIPTYCH_MODEL_DIR", DEFAULT_MODEL_DIR))


def emit(result: dict, table: str, json_path: Path | None) -> None:
    """Print the rendered tables; also write the raw results as JSON when asked."""
    import json

    print(table)
    if json_path:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
