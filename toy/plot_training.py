"""Plot the toy VLM's accuracy vs training steps from runs' ``metrics.jsonl`` (``toy.run_state``).

    python -m toy.plot_training /tmp/toy-vlm-runs/curriculum /tmp/toy-vlm-runs/curriculum-deep \\
        --out docs/toy-vlm-training.png [--reference shipped_val.json]

One panel per question type (teacher-forced validation exact match; colour and shape split by
object count, since one-object scenes need no lookup), one line per run, labelled with its CPU
minutes; ``--reference`` (a JSON of the same keys, e.g. the shipped model on the same items) as
thin black lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .run_state import RunDir

PANELS = (
    ("colour", ("colour@1", "colour@2", "colour@3")),
    ("shape", ("shape@1", "shape@2", "shape@3")),
    ("count / exists / position", ("count", "exists", "position")),
    ("all five types", ("all",)),
)
STYLES = ("-", "--", ":")  # one per series within a panel


def plot(
    runs: list[Path],
    out: Path,
    title: str,
    reference: dict | None = None,
    reference_label: str = "",
    offsets: list[int] | None = None,
) -> Path:
    """Write a PNG of every run's validation curves; return its path.

    ``reference``: accuracies by the same keys (e.g. the shipped model's on the same validation
    items), drawn as thin black horizontal lines in each series' style. ``offsets[i]``: the step run
    ``i`` started from (a run initialised from another one's weights continues its curve).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 2, figsize=(11, 8), sharey=True)
    axes = grid.flatten()  # one per PANELS entry
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, path in enumerate(runs):
        records = RunDir(path).records()
        if not records:
            raise ValueError(f"{path}: no metrics.jsonl records")
        offset = offsets[r] if offsets else 0
        steps = [offset + rec["step"] for rec in records]
        label = f"{path.name} ({records[-1]['cpu_s'] / 60:.0f} CPU min)"
        for ax, (name, keys) in zip(axes, PANELS):
            for key, style in zip(keys, STYLES):
                values = [100 * rec["val"].get(key, float("nan")) for rec in records]
                ax.plot(steps, values, style, color=colours[r % len(colours)],
                        label=f"{label}: {key}" if len(keys) > 1 else label)  # fmt: skip
    for ax, (name, keys) in zip(axes, PANELS):
        for key, style in zip(keys, STYLES):
            if reference and key in reference:
                ax.axhline(100 * reference[key], linestyle=style, color="black", linewidth=0.8,
                           label=f"{reference_label}: {key}")  # fmt: skip
        ax.set_title(name)
        ax.set_xlabel("training step")
        ax.axhline(90, color="grey", linewidth=0.6)  # the target
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best", framealpha=0.6)
    for ax in grid[:, 0]:
        ax.set_ylabel("validation exact match (%)")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories (--run-dir of toy.train_vlm)")
    parser.add_argument("--out", type=Path, default=Path("docs/toy-vlm-training.png"))
    parser.add_argument("--title", default="toy VLM: validation accuracy vs training steps (teacher-forced)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="JSON {key: accuracy} drawn as horizontal lines (e.g. the shipped model)")
    parser.add_argument("--reference-label", default="shipped")
    parser.add_argument("--offsets", default="", help="comma-separated start step per run (fine-tunes continue a curve)")
    args = parser.parse_args(argv)
    reference = json.loads(args.reference.read_text()) if args.reference else None
    offsets = [int(o) for o in args.offsets.split(",")] if args.offsets else None
    if offsets is not None and len(offsets) != len(args.runs):
        parser.error(f"--offsets: {len(offsets)} values for {len(args.runs)} runs")
    print(plot(args.runs, args.out, args.title, reference, args.reference_label, offsets))


if __name__ == "__main__":
    main()
