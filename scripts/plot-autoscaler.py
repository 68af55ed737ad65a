#!/usr/bin/env python3
"""Draws one autoscaler e2e run: p95 against the SLO, replicas and top-k over time.

    scripts/plot-autoscaler.py <timeline.json> <out.png>

The timeline is what tests/tests/autoscaler_e2e.rs writes (one sample per second). matplotlib
comes from a cached virtual environment (scripts/plot-env.sh); nothing else is needed.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    samples = json.load(open(sys.argv[1]))
    if not samples:
        sys.exit(f"{sys.argv[1]}: no samples")
    t = [s["t"] for s in samples]
    p95 = [s["p95Ms"] / 1000 if s.get("p95Ms") is not None else float("nan") for s in samples]
    slo = [s["sloMs"] / 1000 for s in samples]

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(11, 8))
    ax1.plot(t, p95, label="p95 end to end (Prometheus, operator's query)", color="tab:red")
    ax1.plot(t, slo, label="SLO (ServingPolicy latency.p95Ms)", color="black", linestyle="--")
    ax1.set_ylabel("seconds")
    ax1.legend(loc="upper right", fontsize=8)

    def series(key):
        return [s.get(key) if s.get(key) is not None else float("nan") for s in samples]

    ax2.step(t, series("desiredReplicas"), where="post", label="desired (status.autoscaler)")
    ax2.step(t, series("readyReplicas"), where="post", label="Deployment ready", linestyle=":")
    ax2.step(t, series("servingProcesses"), where="post", label="runtime processes serving", alpha=0.6)
    ax2.set_ylabel("replicas")
    ax2.legend(loc="upper right", fontsize=8)

    ax3.step(t, series("topK"), where="post", label="top-k decided", color="tab:green")
    ax3.step(t, series("configTopK"), where="post", label="top-k in config.yaml", linestyle=":", color="tab:olive")
    ax3.set_ylabel("top-k")
    ax3.set_xlabel("seconds since the run started")
    ax3.legend(loc="upper right", fontsize=8)

    # Shade the phases.
    colours = {"load": "#fde0dd", "prometheus-down": "#d9d9d9", "idle": "#e5f5e0"}
    start = 0
    for i in range(1, len(samples) + 1):
        if i == len(samples) or samples[i]["phase"] != samples[start]["phase"]:
            phase = samples[start]["phase"]
            if phase in colours:
                for ax in (ax1, ax2, ax3):
                    ax.axvspan(t[start], t[i - 1], color=colours[phase], zorder=0)
                ax1.annotate(phase, (t[start], 1.01), xycoords=("data", "axes fraction"), fontsize=7)
            start = i
    fig.suptitle("Latency autoscaler e2e: real Prometheus and hybrid-runtime serve processes, KWOK GPU nodes")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
