"""The load benchmark's PNGs (matplotlib, no display): latency percentiles vs load, replicas over time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from benchmarks.load_drivers import LevelRun
from benchmarks.load_replicas import ReplicaSample
from benchmarks.load_stats import PERCENTILES, LevelSummary

LATENCIES = (("ttft_ms", "time to first token"), ("itl_ms", "inter-token latency"),
             ("chat_e2e_ms", "chat end-to-end"), ("image_e2e_ms", "text-to-image end-to-end"))
FIXED = {"CacheServer"}  # one replica by design: not plotted
AXIS = {"open": "offered load (requests/s, Poisson)", "closed": "concurrent users (closed loop)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency_vs_load(summaries: Sequence[LevelSummary], path: Path, title: str) -> Path:
    """One row per mode (open / closed loop), one panel per latency, p50/p95/p99 lines (ms)."""
    plt = _pyplot()
    modes = [m for m in ("open", "closed") if any(s.mode == m for s in summaries)]
    shown = [(name, label) for name, label in LATENCIES
             if any(not math.isnan(v) for s in summaries for v in getattr(s, name).values())]
    figure, axes = plt.subplots(len(modes), len(shown), figsize=(4 * len(shown), 3.2 * len(modes)),
                                squeeze=False)
    for row, mode in enumerate(modes):
        levels = sorted((s for s in summaries if s.mode == mode), key=lambda s: s.load)
        for col, (name, label) in enumerate(shown):
            ax = axes[row][col]
            for q in PERCENTILES:
                ax.plot([s.load for s in levels], [getattr(s, name)[q] for s in levels], marker="o",
                        label=f"p{q}")
            ax.set_title(label, fontsize=10)
            ax.set_xlabel(AXIS[mode], fontsize=9)
            ax.set_ylabel("ms", fontsize=9)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_replicas(samples: Sequence[ReplicaSample], runs: Sequence[LevelRun], path: Path, title: str) -> Path:
    """Each deployment's RUNNING replicas over time (solid steps; dashed: with STARTING ones), the load
    levels shaded behind."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, ax = plt.subplots(figsize=(9, 3.6))
    t0 = samples[0].t_s if samples else 0.0
    for i, run in enumerate(runs):
        ax.axvspan(run.started_s - t0, run.started_s + run.duration_s - t0, alpha=0.12,
                   color="tab:gray" if i % 2 else "tab:blue")
        ax.text(run.started_s - t0, 0.02, run.level.label, transform=ax.get_xaxis_transform(), fontsize=7,
                rotation=90, va="bottom")
    names = sorted({name for sample in samples for name in sample.counts} - FIXED)
    times = [s.t_s - t0 for s in samples]
    for offset, name in enumerate(names):  # a small vertical offset keeps equal lines apart
        (line,) = ax.step(times, [s.counts.get(name, 0) + 0.03 * offset for s in samples], where="post",
                          label=name)
        wanted = [s.counts.get(name, 0) + s.starting.get(name, 0) + 0.03 * offset for s in samples]
        if any(s.starting.get(name, 0) for s in samples):
            ax.step(times, wanted, where="post", linestyle="--", color=line.get_color(), alpha=0.7)
    peak = max((s.counts.get(name, 0) + s.starting.get(name, 0) for s in samples for name in names), default=1)
    ax.set_ylim(0, peak + 0.8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("seconds since the first sample")
    ax.set_ylabel("replicas (solid RUNNING,\ndashed + STARTING)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
