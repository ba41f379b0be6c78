"""bench output: one Markdown table; the JSON report, a CSV of the aggregates and a throughput-latency PNG, each
written by outputs.write_file (atomic, 0644, an existing file only when ours or with --overwrite)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .. import __version__
from ..errors import MissingDependencyError
from ..outputs import TOOL, write_file

LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")
STATS = ("mean", "p50", "p90", "p99")
COUNTS = ("requests", "completed", "failed", "duration_s", "output_tokens", "request_throughput", "output_throughput",
          "goodput")
# Begins with outputs.CSV_HEAD: the header line is what makes the file recognisably ours (outputs.is_ours).
CSV_COLUMNS = ("point", "concurrency", "request_rate") + COUNTS + \
    tuple(f"{m}_{s}" for m in LATENCIES for s in (*STATS, "n")) + \
    tuple(f"{k}_{s}" for k in ("rouge1", "rouge2", "rougeL") for s in ("mean", "ci95_low", "ci95_high"))


def _f(value, fmt: str = ".0f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _dist(d: dict, keys: tuple[str, ...]) -> str:
    return " / ".join(_f(d[k]) for k in keys)


def markdown(report: dict) -> str:
    """One row per sweep point: counts, throughput, goodput, TTFT / TPOT / ITL / E2E (ms), ROUGE."""
    rouge = any(p["aggregate"].get("rouge") for p in report["points"])
    head = ["point", "ok / failed", "req/s", "out tok/s", "goodput req/s"] + \
        [f"{name} mean / p50 / p90 / p99 ms" for name in ("TTFT", "TPOT", "ITL", "E2E")]
    if rouge:
        head += ["ROUGE-1 [95% CI]", "ROUGE-2", "ROUGE-L"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in report["points"]:
        a = p["aggregate"]
        row = [p["label"], f"{a['completed']} / {a['failed']}", _f(a["request_throughput"], ".3f"),
               _f(a["output_throughput"], ".2f"), _f(a["goodput"], ".3f")] + [_dist(a[m], STATS) for m in LATENCIES]
        if rouge:
            r = a.get("rouge")
            row += ([f"{r['rouge1']['mean']:.2f} [{r['rouge1']['ci95_low']:.2f}, {r['rouge1']['ci95_high']:.2f}]",
                     f"{r['rouge2']['mean']:.2f}", f"{r['rougeL']['mean']:.2f}"] if r else ["n/a"] * 3)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def failures(report: dict) -> list[str]:
    """`label: N x message` for every distinct error of every point."""
    return [f"{p['label']}: {e['count']} x {e['message']}" for p in report["points"] for e in p["aggregate"]["errors"]]


def csv_rows(report: dict) -> list[dict]:
    """One row per sweep point: counts, throughput, each latency's mean / p50 / p90 / p99 / n, ROUGE."""
    rows = []
    for p in report["points"]:
        a = p["aggregate"]
        row = {"point": p["label"], "concurrency": p.get("concurrency"), "request_rate": p.get("request_rate"),
               **{k: a[k] for k in COUNTS}}
        row.update({f"{m}_{s}": a[m][s] for m in LATENCIES for s in (*STATS, "n")})
        for k, r in (a.get("rouge") or {}).items():
            row.update({f"{k}_{s}": r[s] for s in ("mean", "ci95_low", "ci95_high")})
        rows.append(row)
    return rows


def csv_text(report: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return out.getvalue()


def write_outputs(report: dict, json_path: Path | None, png_path: Path | None, csv_path: Path | None = None,
                  overwrite: bool = False) -> None:
    """Write the JSON report, the CSV and the plot where asked (outputs.write_file: atomic, ours or --overwrite)."""
    if csv_path is not None:
        write_file(csv_path, csv_text(report).encode(), overwrite=overwrite)
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
