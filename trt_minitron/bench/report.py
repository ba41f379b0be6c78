"""bench output: one Markdown table, the JSON report (written atomically) and a throughput-latency PNG."""

from __future__ import annotations

import io
import json
from pathlib import Path

from .. import __version__
from ..errors import MissingDependencyError
from ..outputs import TOOL, write_file


def _f(value, fmt: str = ".0f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _dist(d: dict, keys: tuple[str, ...]) -> str:
    return " / ".join(_f(d[k]) for k in keys)


def markdown(report: dict) -> str:
    """One row per sweep point: counts, throughput, goodput, TTFT / TPOT / ITL / E2E (ms), ROUGE."""
    rouge = any(p["aggregate"].get("rouge") for p in report["points"])
    head = ["point", "ok / failed", "req/s", "out tok/s", "goodput req/s", "TTFT mean / p50 / p99 ms",
            "TPOT mean / p50 / p99 ms", "ITL p50 / p99 ms", "E2E mean / p50 / p90 / p99 ms"]
    if rouge:
        head += ["ROUGE-1 [95% CI]", "ROUGE-2", "ROUGE-L"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in report["points"]:
        a = p["aggregate"]
        row = [p["label"], f"{a['completed']} / {a['failed']}", _f(a["request_throughput"], ".3f"),
               _f(a["output_throughput"], ".2f"), _f(a["goodput"], ".3f"),
               _dist(a["ttft_ms"], ("mean", "p50", "p99")), _dist(a["tpot_ms"], ("mean", "p50", "p99")),
               _dist(a["itl_ms"], ("p50", "p99")), _dist(a["e2el_ms"], ("mean", "p50", "p90", "p99"))]
        if rouge:
            r = a.get("rouge")
            row += ([f"{r['rouge1']['mean']:.2f} [{r['rouge1']['ci95_low']:.2f}, {r['rouge1']['ci95_high']:.2f}]",
                     f"{r['rouge2']['mean']:.2f}", f"{r['rougeL']['mean']:.2f}"] if r else ["n/a"] * 3)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def failures(report: dict) -> list[str]:
    """`label: N x message` for every distinct error of every point."""
    return [f"{p['label']}: {e['count']} x {e['message']}" for p in report["points"] for e in p["aggregate"]["errors"]]


def write_outputs(report: dict, json_path: Path | None, png_path: Path | None, overwrite: bool = False) -> None:
    """Write the JSON report and the plot where asked (outputs.write_file: atomic, ours or --overwrite)."""
    if json_path is not None:
        write_file(json_path, json.dumps(report, indent=2, ensure_ascii=False).encode(), overwrite=overwrite)
    if png_path is not None:
        plot_sweeps({Path(report["server"]["model"]).name or report["server"]["model"]: report}, Path(png_path),
                    overwrite=overwrite)


def plot_sweeps(runs: dict[str, dict], path: Path, title: str | None = None, overwrite: bool = False) -> None:
    """PNG: output tokens/s (x) against TTFT and E2E latency p50 / p99 (y), one line per run, points labelled."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("--plot needs matplotlib: pip install 'trt-minitron[serve]'") from None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, metric, name in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "e2el_ms", "E2E latency")):
        for i, (run, report) in enumerate(runs.items()):
            pts = [p for p in report["points"] if p["aggregate"]["output_throughput"] and p["aggregate"][metric]["n"]]
            x = [p["aggregate"]["output_throughput"] for p in pts]
            color = f"C{i}"
            for q, style in (("p50", "-o"), ("p99", "--s")):
                ax.plot(x, [p["aggregate"][metric][q] / 1000.0 for p in pts], style, color=color,
                        label=f"{run} {q}")
            for p, xv in zip(pts, x):
                ax.annotate(p["label"], (xv, p["aggregate"][metric]["p50"] / 1000.0), textcoords="offset points",
                            xytext=(4, 4), fontsize=8, color=color)
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(f"{name} (s)")
        ax.set_title(f"{name} vs throughput")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = io.BytesIO()
    try:  # the Software text makes the file recognisably ours (outputs.is_ours)
        fig.savefig(png, format="png", dpi=110,
                    metadata={"Software": f"{TOOL} {__version__} (matplotlib {matplotlib.__version__})"})
    finally:
        plt.close(fig)
    write_file(path, png.getvalue(), overwrite=overwrite)
