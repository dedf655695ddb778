"""The disaggregation benchmark's PNG (matplotlib, no display): chat TTFT and image throughput / goodput
against the offered load, and every deployment's replica count over time, both designs side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.load_plots import FIXED, _pyplot

if TYPE_CHECKING:
    from benchmarks.disaggregation import DesignResult, DesignSummary

COLOURS = {"separate": "tab:blue", "monolith": "tab:red"}


def plot_disaggregation(results: Sequence[DesignResult], summaries: Sequence[DesignSummary], slo_ttft_ms: float,
                        path: Path, title: str) -> Path:
    """Three panels: chat TTFT p50 / p99 vs rate (the SLO marked), images/min and goodput vs rate, and the
    replicas of round 0 over time."""
    plt = _pyplot()
    figure, (ttft, throughput, replicas) = plt.subplots(1, 3, figsize=(15, 4.2))
    for design, colour in COLOURS.items():
        mine = sorted((s for s in summaries if s.design == design), key=lambda s: s.rate)
        rates = [s.rate for s in mine]
        ttft.plot(rates, [s.level.ttft_ms[99] for s in mine], marker="o", color=colour, label=f"{design} p99")
        ttft.plot(rates, [s.level.ttft_ms[50] for s in mine], marker="o", color=colour, linestyle="--",
                  label=f"{design} p50")
        throughput.plot(rates, [s.images_per_min for s in mine], marker="o", color=colour,
                        label=f"{design} images/min")
        throughput.plot(rates, [s.level.goodput_per_s * 60 for s in mine], marker="s", color=colour,
                        linestyle="--", label=f"{design} goodput/min")
    ttft.axhline(slo_ttft_ms, color="gray", linestyle=":", linewidth=1, label=f"SLO {slo_ttft_ms:g} ms")
    ttft.set_yscale("log")
    ttft.set_ylabel("chat time to first token (ms, log)")
    ttft.set_title("chat TTFT", fontsize=10)
    throughput.set_ylabel("per minute")
    throughput.set_ylim(bottom=0)
    throughput.set_title("images/min and goodput (requests within the SLO)", fontsize=10)
    for ax in (ttft, throughput):
        ax.set_xlabel("offered load (requests/s, Poisson)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    offset = 0
    for result in results:
        samples = result.samples[0] if result.samples else []
        t0 = samples[0].t_s if samples else 0.0
        for name in sorted({n for s in samples for n in s.counts} - FIXED):
            offset += 1  # a small vertical offset keeps equal lines apart
            replicas.step([s.t_s - t0 for s in samples], [s.counts.get(name, 0) + 0.03 * offset for s in samples],
                          where="post", color=COLOURS[result.design], alpha=0.8,
                          linestyle="-" if result.design == "monolith" else ":", label=f"{result.design}: {name}")
    replicas.set_xlabel("seconds since the first level started (round 0)")
    replicas.set_ylabel("RUNNING replicas")
    replicas.set_ylim(bottom=0)
    replicas.legend(fontsize=7, loc="lower right")
    replicas.grid(alpha=0.3)
    replicas.set_title("replicas per deployment (fixed: equal CPU budgets)", fontsize=10)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
