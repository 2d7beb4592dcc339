"""Figures as Dagster metadata: a PNG inside Markdown, shown on the asset's page."""

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

from recloop.experiments.readout import ExperimentReadout  # noqa: E402


def png_markdown(figure: Figure, title: str) -> dg.MetadataValue:
    """A finished figure as Markdown with an inline PNG (closes the figure)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def training_curve(history: list[dict[str, float]], best_epoch: int) -> dg.MetadataValue:
    """Training loss and validation NDCG@10 per epoch, the kept epoch marked."""
    epochs = [row["epoch"] for row in history]
    figure, loss_axis = plt.subplots(figsize=(6, 3), dpi=100)
    loss_axis.plot(epochs, [row["loss"] for row in history], color="tab:gray", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss")
    score_axis = loss_axis.twinx()
    score_axis.plot(epochs, [row["score"] for row in history], color="tab:blue", marker="o", ms=3)
    score_axis.set_ylabel("validation NDCG@10", color="tab:blue")
    score_axis.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1)
    return png_markdown(figure, "training curve")


def metrics_table(
    metrics: Mapping[str, Mapping[str, float]], popularity: Mapping[str, float]
) -> str:
    """One Markdown table: a row per segment (and popularity, all users), a column per
    metric, values rounded."""
    columns = list(metrics["all"])
    rows = [(segment, values) for segment, values in metrics.items()]
    rows.append(("popularity (all)", popularity))
    lines = [
        "| segment | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for segment, values in rows:
        cells = [f"{values[name]:.4f}" if name in values else "" for name in columns]
        lines.append(f"| {segment} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def candidate_vs_popularity(
    candidate: Mapping[str, float], popularity: Mapping[str, float], names: Sequence[str]
) -> dg.MetadataValue:
    """Grouped bars: the candidate and popularity on the same test users, per metric."""
    figure, axis = plt.subplots(figsize=(6, 3), dpi=100)
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], [candidate[n] for n in names], 0.4, label="candidate")
    axis.bar([p + 0.2 for p in positions], [popularity[n] for n in names], 0.4, label="popularity")
    axis.set_xticks(list(positions), list(names))
    axis.legend()
    return png_markdown(figure, "candidate against popularity")


def ctr_curve(blocks: pd.DataFrame, bucket: int) -> dg.MetadataValue:
    """CTR per block of `bucket` impressions (recloop.monitoring.drift_report.ctr_series), in serving order."""
    figure, axis = plt.subplots(figsize=(6, 3), dpi=100)
    axis.plot(blocks.index * bucket, blocks["ctr"], marker="o", ms=3)
    axis.set_xlabel("impressions served by the champion")
    axis.set_ylabel(f"CTR per {bucket} impressions")
    return png_markdown(figure, "CTR")


def loop_timeline_png(timeline: dict, path: Path, bucket_s: float = 10.0) -> Path:
    """CTR per `bucket_s` seconds of simulated traffic, with the loop's events marked:
    drift, retrain requests and ends, promotions, the service's swap."""
    sessions = pd.DataFrame(timeline["sessions"])
    start = timeline["started"]
    sessions["bucket"] = ((sessions["at"] - start) // bucket_s) * bucket_s
    per_bucket = sessions.groupby("bucket")[["clicks", "impressions"]].sum()
    figure, axis = plt.subplots(figsize=(10, 4), dpi=100)
    axis.plot(per_bucket.index, per_bucket["clicks"] / per_bucket["impressions"], color="tab:blue")
    axis.set_xlabel("seconds since the loop started")
    axis.set_ylabel(f"CTR per {bucket_s:.0f} s")
    colours = {"drift": "tab:red", "retrain": "tab:orange", "promote": "tab:green"}
    for mark in timeline["marks"]:
        colour = next((c for word, c in colours.items() if word in mark["what"]), "tab:purple")
        axis.axvline(mark["at"] - start, color=colour, linestyle="--", linewidth=1)
        axis.annotate(
            mark["what"][:40],
            (mark["at"] - start, axis.get_ylim()[1]),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color=colour,
        )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def variant_table(readout: ExperimentReadout) -> str:
    """Markdown table of an A/B readout: per-variant counts and CTR, then the comparisons."""
    lines = [
        "| variant | users | requests | impressions | clicks | CTR | 95 % CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in readout.variants:
        lines.append(
            f"| {v.variant} | {v.users:,} | {v.requests:,} | {v.impressions:,} | {v.clicks:,} | "
            f"{v.ctr.value:.4f} | {v.ctr.ci_low:.4f} to {v.ctr.ci_high:.4f} |"
        )
    for c in readout.comparisons:
        lines.append("")
        absolute, relative = c.absolute_difference, c.relative_difference
        lines.append(
            f"{c.treatment} vs {c.control}: CTR {absolute.value:+.4f} "
            f"[{absolute.ci_low:+.4f}, {absolute.ci_high:+.4f}] ({relative.value:+.1%}), "
            f"p = {c.p_value:.2g}: {c.verdict}"
        )
    return "\n".join(lines)


def ctr_by_variant(readout: ExperimentReadout) -> dg.MetadataValue:
    """CTR per variant with its interval, as bars."""
    names = [v.variant.split(":", 1)[1] for v in readout.variants]
    values = [v.ctr.value for v in readout.variants]
    errors = [
        [v.ctr.value - v.ctr.ci_low for v in readout.variants],
        [v.ctr.ci_high - v.ctr.value for v in readout.variants],
    ]
    figure, axis = plt.subplots(figsize=(5, 3), dpi=100)
    axis.bar(names, values, yerr=errors, capsize=6, color="tab:blue")
    axis.set_ylabel("CTR (95 % CI)")
    axis.set_title(readout.experiment)
    return png_markdown(figure, "CTR by variant")


def ope_table(rows: list[dict]) -> str:
    """Markdown: each variant's off-policy estimates from another variant's traffic, next to
    what it earned online (clicks per request)."""
    lines = [
        "| target | from the traffic of | online | logging | IPS | SNIPS (95 % CI) | DR | ESS | usable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = (value if value is not None else float("nan") for value in r["snips"]["ci"])
        lines.append(
            f"| {r['target']} | {r['logs_of']} | {r['online_clicks_per_request']:.3f} | "
            f"{r['logging_clicks_per_request']:.3f} | {r['ips']['value']:.3f} | "
            f"{r['snips']['value']:.3f} ({low:.3f} to {high:.3f}) | {r['dr']['value']:.3f} | "
            f"{r['snips']['ess']:.0f} | {'yes' if r['enough_overlap'] else 'no: too little overlap'} |"
        )
    return "\n".join(lines)
