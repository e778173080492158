"""Tables and a bar plot from a multirun: ``python -m multiflow_pl.report DIR [--out OUT]``.

``DIR`` holds one folder per run with ``metrics.json`` and ``.hydra/overrides.yaml`` (a Hydra multirun
folder, or any folder above several of them). Runs are grouped into *settings* by the command-line
overrides that differ between runs, other than the category and the seed; for each setting the report
gives per category the mean ± std over seeds and, over categories, the mean over categories ± the std of
that mean over seeds. Written to ``OUT`` (default ``DIR``): ``report.md``, ``per_category.csv``,
``summary.csv`` and ``report.png`` (a bar plot of one metric per category and setting).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from multiflow_pl.evaluation.writers import write_csv
from multiflow_pl.utils.atomic import write_atomic

REPORT_METRICS = (
    "sample_auroc",
    "sample_auroc_mean",
    "image_auroc",
    "pixel_auroc",
    "pixel_ap",
    "pixel_aupro",
)
CATEGORY_KEY = "data.category"
SEED_KEY = "seed"
ALL_CATEGORIES = "mean"


@dataclass(frozen=True)
class RunResult:
    """One run of a multirun: where it is, its category and seed, all its overrides and its metrics."""

    path: Path
    category: str
    seed: str
    overrides: dict[str, str]
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class Report:
    """The files written by :func:`write_report` and the tables behind them."""

    markdown: Path
    per_category_csv: Path
    summary_csv: Path
    plot: Path
    per_category: list[dict]
    summary: list[dict]


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """Hydra override strings -> {key: value}; ``+``/``++``/``~`` prefixes are dropped from keys."""
    parsed = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def collect_runs(directory: str | Path) -> list[RunResult]:
    """Every run under ``directory`` (folders holding metrics.json and .hydra/overrides.yaml), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a folder; give the multirun folder (logs/train/multiruns/...)."
        )
    runs = []
    for metrics_path in sorted(directory.rglob("metrics.json")):
        overrides_path = metrics_path.parent / ".hydra" / "overrides.yaml"
        if not overrides_path.is_file():
            continue
        overrides = parse_overrides(OmegaConf.to_container(OmegaConf.load(overrides_path)))
        metrics = json.loads(metrics_path.read_text())
        category = str(metrics.get("category") or overrides.get(CATEGORY_KEY, "?"))
        seed = metrics.get("seed", overrides.get(SEED_KEY))
        values = {k: v for k, v in metrics.items() if k not in ("category", "seed")}
        runs.append(RunResult(metrics_path.parent, category, str(seed), overrides, values))
    if not runs:
        raise FileNotFoundError(
            f"No runs under {directory}: expected folders with metrics.json and .hydra/overrides.yaml."
        )
    return runs


def varied_keys(runs: Sequence[RunResult]) -> list[str]:
    """Override keys whose value is not the same in every run, except the category and the seed."""
    keys = sorted({key for run in runs for key in run.overrides} - {CATEGORY_KEY, SEED_KEY})
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def setting_of(run: RunResult, keys: Sequence[str]) -> str:
    """A run's setting: its values of the varied override keys (``"all runs"`` when nothing varies)."""
    return ", ".join(f"{key}={run.overrides.get(key, '(default)')}" for key in keys) or "all runs"


def defect_metrics(runs: Sequence[RunResult]) -> list[str]:
    """The per-defect-type sample AUROC keys (``sample_auroc_<CODE>``) that any run reports, sorted."""
    return sorted(
        {
            key
            for run in runs
            for key in run.metrics
            if key.startswith("sample_auroc_") and key != "sample_auroc_mean"
        }
    )


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std (NaN for fewer than two), count) of the finite values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return float(np.mean(finite)), std, len(finite)


def summarize(
    runs: Sequence[RunResult], metrics: Sequence[str] = REPORT_METRICS
) -> tuple[list[dict], list[dict]]:
    """(per-category rows, summary rows), each row ``{"setting", "category", "n_seeds", <m>_mean, <m>_std}``.

    Per category: mean ± std over seeds. Summary (category :data:`ALL_CATEGORIES`): for each seed the mean
    over the categories, then mean ± std of those over seeds; ``n_categories`` tells how many categories.
    """
    keys = varied_keys(runs)
    by_cell: dict[tuple[str, str], dict[str, RunResult]] = defaultdict(dict)
    for run in runs:
        by_cell[(setting_of(run, keys), run.category)][run.seed] = run
    per_category = []
    for (setting, category), by_seed in sorted(by_cell.items()):
        row: dict = {"setting": setting, "category": category, "n_seeds": len(by_seed)}
        for metric in metrics:
            mean, std, _ = mean_std([run.metrics.get(metric) for run in by_seed.values()])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        per_category.append(row)
    summary = []
    for setting in sorted({setting for setting, _ in by_cell}):
        cells = {category: by_seed for (s, category), by_seed in by_cell.items() if s == setting}
        seeds = sorted({seed for by_seed in cells.values() for seed in by_seed})
        row = {
            "setting": setting,
            "category": ALL_CATEGORIES,
            "n_seeds": len(seeds),
            "n_categories": len(cells),
        }
        for metric in metrics:
            seed_means = [
                mean_std(
                    [by_seed[seed].metrics.get(metric) for by_seed in cells.values() if seed in by_seed]
                )[0]
                for seed in seeds
            ]
            mean, std, _ = mean_std(seed_means)
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        summary.append(row)
    return per_category, summary


def _cell(row: dict, metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if not math.isfinite(mean):
        return "n/a"
    return f"{100 * mean:.1f}" if not math.isfinite(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown_table(rows: Sequence[dict], metrics: Sequence[str], first: Sequence[str]) -> str:
    """A Markdown table: the ``first`` columns as they are, then each metric as ``mean ± std`` in percent."""
    header = [*first, *metrics]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(first) + ["---:"] * len(metrics)) + "|",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join([str(row[c]) for c in first] + [_cell(row, m) for m in metrics]) + " |"
        )
    return "\n".join(lines)


def save_bar_plot(per_category: Sequence[dict], summary: Sequence[dict], metric: str, path: Path) -> Path:
    """Bars of ``metric`` (mean over seeds, std as error bars) per category and the mean, one colour per
    setting."""
    rows = [*per_category, *summary]
    categories = list(dict.fromkeys(row["category"] for row in rows))
    settings = list(dict.fromkeys(row["setting"] for row in rows))
    width = 0.8 / len(settings)
    figure = Figure(
        figsize=(max(5.0, 0.35 * len(categories) * len(settings) + 2.5), 3.6), layout="constrained"
    )
    ax = figure.subplots()
    for number, setting in enumerate(settings):
        cells = {row["category"]: row for row in rows if row["setting"] == setting}
        xs = [i + (number - (len(settings) - 1) / 2) * width for i, c in enumerate(categories) if c in cells]
        means = [100 * cells[c][f"{metric}_mean"] for c in categories if c in cells]
        stds = [100 * np.nan_to_num(cells[c][f"{metric}_std"]) for c in categories if c in cells]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=setting)
    many = len(categories) > 8
    ax.set_xticks(
        range(len(categories)), categories, rotation=45 if many else 0, ha="right" if many else "center"
    )
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.axhline(50, color="0.6", linewidth=0.8, linestyle="--")
    ax.legend(fontsize=7, loc="lower right")
    figure.savefig(path, dpi=110)
    return path


def write_report(
    directory: str | Path,
    out: str | Path | None = None,
    metrics: Sequence[str] = REPORT_METRICS,
    plot_metric: str = "sample_auroc",
) -> Report:
    """Collect the runs under ``directory`` and write report.md, per_category.csv, summary.csv and
    report.png into ``out`` (default ``directory``). report.md adds per-defect-type tables of sample AUROC
    (``sample_auroc_<CODE>``) when the runs report them."""
    if plot_metric not in metrics:
        raise ValueError(f"plot_metric {plot_metric!r} is not one of the reported metrics {tuple(metrics)}")
    runs = collect_runs(directory)
    per_category, summary = summarize(runs, metrics)
    out = Path(out) if out is not None else Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    keys = varied_keys(runs)
    common = sorted(
        {
            f"{k}={v}"
            for run in runs
            for k, v in run.overrides.items()
            if k not in (*keys, CATEGORY_KEY, SEED_KEY)
        }
    )
    sections = [
        f"# Report: {Path(directory).resolve().name}",
        f"{len(runs)} runs; settings differ in: {', '.join(keys) or 'nothing'}; "
        f"common overrides: {', '.join(f'`{o}`' for o in common) or 'none'}. "
        "Metrics in percent, mean ± std over seeds.",
        "## Mean over categories",
        markdown_table(summary, metrics, ["setting", "n_categories", "n_seeds"]),
        "## Per category",
        markdown_table(per_category, metrics, ["setting", "category", "n_seeds"]),
    ]
    defects = defect_metrics(runs)
    if defects:
        defect_per_category, defect_summary = summarize(runs, defects)
        sections += [
            "## Sample AUROC per defect type, mean over categories",
            markdown_table(defect_summary, defects, ["setting", "n_categories", "n_seeds"]),
            "## Sample AUROC per defect type, per category",
            markdown_table(defect_per_category, defects, ["setting", "category", "n_seeds"]),
        ]
    text = "\n\n".join(sections)
    markdown = out / "report.md"
    write_atomic(markdown, text + "\n")
    return Report(
        markdown=markdown,
        per_category_csv=write_csv(out / "per_category.csv", per_category),
        summary_csv=write_csv(out / "summary.csv", summary),
        plot=save_bar_plot(per_category, summary, plot_metric, out / "report.png"),
        per_category=per_category,
        summary=summary,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m multiflow_pl.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "directory", help="multirun folder (runs with metrics.json and .hydra/overrides.yaml)"
    )
    parser.add_argument(
        "--out", default=None, help="where to write the report (default: the multirun folder)"
    )
    parser.add_argument("--plot-metric", default="sample_auroc", help="metric of the bar plot")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.directory, args.out, plot_metric=args.plot_metric)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(report.markdown.read_text())
    print(f"written: {report.markdown}, {report.per_category_csv}, {report.summary_csv}, {report.plot}")


if __name__ == "__main__":
    main()
