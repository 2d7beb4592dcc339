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


# The UI shows Markdown metadata inline only under 1,000 characters; a PNG never fits.
INLINE_MARKDOWN_LIMIT = 1000
SPARK_WIDTH, SPARK_HEIGHT = 160, 40


def training_curve(history: list[dict[str, float]], best_epoch: int) -> dg.MetadataValue:
    """Validation NDCG@10 (blue) and train loss (grey) per epoch, the kept epoch marked
    (green): an SVG sparkline small enough to show inline on the asset's page (long runs
    are drawn through every second, third... epoch until it fits)."""
    for stride in range(1, len(history) + 1):
        drawn = history[::stride]
        if drawn[-1] is not history[-1]:
            drawn.append(history[-1])
        text = _sparkline_markdown(drawn, best_epoch)
        if len(text) < INLINE_MARKDOWN_LIMIT:
            return dg.MetadataValue.md(text)
    raise ValueError(f"no inline training curve fits {INLINE_MARKDOWN_LIMIT} characters")


def _sparkline_markdown(history: list[dict[str, float]], best_epoch: int) -> str:
    epochs = [row["epoch"] for row in history]
    first, last = min(epochs), max(epochs)

    def x(epoch: float) -> int:
        return round((epoch - first) / max(last - first, 1) * SPARK_WIDTH)

    def line(values: list[float], colour: str) -> str:
        low, high = min(values), max(values)
        spread = (high - low) or 1.0
        points = ",".join(
            f"{x(epoch)},{round((high - value) / spread * SPARK_HEIGHT)}"
            for epoch, value in zip(epochs, values, strict=True)
        )
        return f'<polyline points="{points}" fill="none" stroke="{colour}"/>'

    best = x(best_epoch)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="-2 -2 {SPARK_WIDTH + 4} '
        f'{SPARK_HEIGHT + 4}" width="{2 * SPARK_WIDTH}">'
        f'<line x1="{best}" y1="0" x2="{best}" y2="{SPARK_HEIGHT}" stroke="green"/>'
        + line([row["loss"] for row in history], "gray")
        + line([row["score"] for row in history], "blue")
        + "</svg>"
    )
    return f"![training curve](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"


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


def model_comparison(
    models: Mapping[str, Mapping[str, float]], names: Sequence[str]
) -> dg.MetadataValue:
    """Grouped bars, a group per metric and a bar per model (candidate, champion,
    popularity), all scored on the same test users."""
    figure, axis = plt.subplots(figsize=(6, 3), dpi=100)
    width = 0.8 / len(models)
    for offset, (label, values) in enumerate(models.items()):
        positions = [p - 0.4 + width * (offset + 0.5) for p in range(len(names))]
        axis.bar(positions, [values[n] for n in names], width, label=label)
    axis.set_xticks(list(range(len(names))), list(names))
    axis.legend()
    return png_markdown(figure, "candidate, champion and popularity")


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
