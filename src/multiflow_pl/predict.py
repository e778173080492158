"""Score new samples with a trained checkpoint: ``python -m multiflow_pl.predict ckpt_path=CKPT input=PATH``.

``PATH`` is a sample folder (``<view>.<ext>`` per view), a folder of sample folders, an own-rig or
Real-IAD root, or a Real-IAD meta JSON (see :mod:`multiflow_pl.data.inputs`). The model, backbone and
preprocessing come from the checkpoint alone. Written into the run directory, all or nothing:

* ``scores.csv``: one row per sample, in input order: sample score (max over views) and mean, normalised
  score, decision (OK / NG, INVALID for a non-finite score or an image that cannot be read), views above
  the threshold, per-view scores and normalised scores, ``input_flags`` (how its views differ from the
  training images, or why they cannot be read), and the label when the input has labels;
* ``heatmaps/<key>.png``: the views and their anomaly maps on one colour scale (with a threshold: from
  normalised score 0, dark, to the threshold, brightest, so saturated pixels are above the threshold);
* ``summary.json``: counts, the invalid samples, the threshold and how scores were normalised (written last).

Without a fitted threshold (trained with ``data.val_fraction=0``) only raw scores are reported.

A sample with a view whose image is missing, empty, not an image, truncated or otherwise damaged is not
scored: its row has decision INVALID, empty score cells and the reason in ``input_flags``; the other samples
are scored exactly as without it (:mod:`multiflow_pl.invalid`). The exit status is then 3 (2: a user error
stopped the run, nothing written). ``strict=true`` stops at the first such sample instead, as at a view
unlike the training images.

Speed (``speed=cpu``, or ``backbone_freeze``, ``backbone_chunk``, ``backbone_streams``, ``flow_conv_dtype``
one by one; conf/speed/; off by default, so that the scores equal the evaluation's bit for bit; measured in
docs/benchmarks.md): :class:`FastBackbone` runs the backbone TorchScript-frozen (batch norm folded into the
convolutions, oneDNN kernels), on chunks of a few images (a batch of 8 samples is 40 images, whose
activations overflow the CPU caches), several chunks at once on threads of one intra-op thread each;
features then differ from the eager ones by float rounding (~2e-6 relative;
:mod:`multiflow_pl.speed.fast_backbone`). ``flow_conv_dtype=bfloat16`` runs the flow's convolutions in
bfloat16 (CPUs with AMX or AVX-512 bf16, and GPUs), which moves scores by about 1e-3 of the largest score.
``summary.json`` records the settings that ran. Always on, and exact: the flow folds its weights once for
the whole run and, on CPU, lays them out for oneDNN once
(:func:`~multiflow_pl.speed.folded_subnet.keep_folded_weights`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from multiflow_pl.cli import entry_point
from multiflow_pl.config import config_dir
from multiflow_pl.data.datamodule import flips_for
from multiflow_pl.data.dataset import MultiViewImageDataset, readable_batches
from multiflow_pl.data.errors import DatasetError, summarize
from multiflow_pl.data.inputs import FoundSamples, find_samples
from multiflow_pl.data.view_profile import FLAG_KINDS, InputFlag, format_flags, input_flags
from multiflow_pl.evaluation.plots import plot_sample_sheet
from multiflow_pl.evaluation.writers import write_csv
from multiflow_pl.invalid import EXIT_INVALID_SAMPLES, INVALID, invalid_message, unreadable_counts
from multiflow_pl.models.model import MultiFlowModel
from multiflow_pl.models.threshold import NORMALISATION, Threshold
from multiflow_pl.pipeline import load_trained_model
from multiflow_pl.speed.fast_backbone import FastBackbone
from multiflow_pl.speed.folded_subnet import conv_settings, keep_folded_weights, set_conv_dtype
from multiflow_pl.utils.atomic import staged_folder
from multiflow_pl.utils.machine import cpu_model, has_fast_bfloat16
from multiflow_pl.utils.progress import progress

log = logging.getLogger(__name__)
BF16_EMULATED = (
    "flow_conv_dtype=bfloat16 on %s, which has neither AMX nor AVX-512 bf16: the convolutions are emulated "
    "and may run slower than float32. Set flow_conv_dtype=null."
)
NO_THRESHOLD = (
    "The checkpoint holds no OK/NG threshold (it was trained with data.val_fraction=0): only raw scores "
    "are reported. Retrain with data.val_fraction>0 to get normalised scores and decisions."
)


def predict(cfg: DictConfig) -> dict:
    """Score ``cfg.input`` with ``cfg.ckpt_path``; writes the outputs into ``cfg.paths.output_dir``.

    Returns the summary (also written as summary.json).
    """
    trained = load_trained_model(cfg.ckpt_path)
    run_cfg, threshold, strict = trained.config, trained.threshold, bool(cfg.strict)
    data = run_cfg.data
    view_names = list(run_cfg.view_names) if run_cfg.get("view_names") else None
    found = find_samples(
        cfg.input,
        view_names,
        category=cfg.get("category") or data.category,
        split=cfg.split,
        json_dir=cfg.get("json_dir") or data.json_dir,
        resolution=str(cfg.get("resolution") or data.resolution),
        root=cfg.get("root"),
        allow_missing_views=not strict,
    )
    _check_views(found, trained.model.n_views, view_names, cfg.ckpt_path)
    flags = _input_flags(found, run_cfg.get("view_profile"), strict)
    auto_device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto_device if cfg.device == "auto" else cfg.device)
    model = trained.model.to(device)
    model.backbone = FastBackbone.configured(
        model.backbone,
        cfg.get("backbone_freeze", False),
        cfg.get("backbone_chunk"),
        cfg.get("backbone_streams"),
    )
    if cfg.get("flow_conv_dtype"):
        set_conv_dtype(model.flow, cfg.flow_conv_dtype)
        if device.type == "cpu" and has_fast_bfloat16() is False:
            log.warning(BF16_EMULATED, cpu_model())
    if threshold is None:
        log.warning(NO_THRESHOLD)
    elif threshold.few_samples_warning():
        log.warning(threshold.few_samples_warning())
    names = list(found.samples[0].view_names)
    rows: dict[int, dict] = {}  # input index -> row
    unreadable: dict[str, list[InputFlag]] = {}
    run_dir = Path(cfg.paths.output_dir)
    with (
        staged_folder(run_dir, last="summary.json") as stage,
        torch.inference_mode(),
        keep_folded_weights(model),
    ):
        n_heatmaps = len(found.samples) if cfg.get("max_heatmaps") is None else cfg.max_heatmaps
        for batch in _image_batches(found, model, data, cfg):
            for item in batch["unreadable"]:
                unreadable[item["key"]] = item["unreadable"]
                row = _sample_row(item["key"], names, None, threshold)
                row["input_flags"] = format_flags([*flags.get(item["key"], []), *item["unreadable"]])
                if found.labelled:
                    row.update(label=int(item["label"]), anomaly_class=item["anomaly_class"])
                rows[int(item["index"])] = row
            if "images" not in batch:  # every sample of the batch is unreadable
                continue
            images = batch["images"].to(device)
            foreground = batch["foreground"].to(device) if data.foreground == "folder" else None
            outputs = [t.cpu() for t in model(images, foreground)]
            maps = outputs.pop()
            for i, key in enumerate(batch["key"]):
                row = _sample_row(key, names, [t[i] for t in outputs], threshold)
                row["input_flags"] = format_flags(flags.get(key, []))
                if found.labelled:
                    row.update(label=int(batch["label"][i]), anomaly_class=batch["anomaly_class"][i])
                if cfg.heatmaps and len(rows) - len(unreadable) < n_heatmaps:
                    row["heatmap"] = _save_heatmap(
                        stage, run_dir, key, batch, i, maps[i], names, row, threshold
                    )
                rows[int(batch["index"][i])] = row
        ordered = [rows[index] for index in sorted(rows)]
        write_csv(stage / "scores.csv", ordered)
        summary = _summary(cfg, found, names, ordered, threshold)
        summary["input_flags"] = _flag_counts(flags)
        summary["unreadable"] = unreadable_counts(unreadable)
        summary["speed"] = _speed_settings(model, device)
        (stage / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if unreadable:
        reasons = {key: format_flags(flags) for key, flags in unreadable.items()}
        log.warning(invalid_message(reasons, len(ordered)))
    log.info("Scored %d samples: %s. Outputs in %s", len(ordered), summary["decisions"], run_dir)
    return summary


def _speed_settings(model: MultiFlowModel, device: torch.device) -> dict:
    """The speed settings that ran, with ``auto`` resolved (conf/speed/)."""
    backbone = model.backbone
    fast = isinstance(backbone, FastBackbone)
    return {
        "device": device.type,
        "backbone_frozen": fast and backbone.frozen,
        "backbone_chunk": backbone.chunk if fast else None,
        "backbone_streams": backbone.streams if fast else 1,
        "flow_conv_dtype": conv_settings(model.flow)["dtype"],
    }


def _image_batches(
    found: FoundSamples, model: MultiFlowModel, data: DictConfig, cfg: DictConfig
) -> Iterator[dict]:
    """Batches of images prepared as in training (size, flips, foreground), with progress; masks only for
    heat maps.

    Samples whose images cannot be read are listed apart (``unreadable``; the other samples are batched as
    without them), or with ``strict=true`` stop the run naming the file."""
    has_masks = any(v.mask_path is not None for s in found.samples for v in s.views)
    dataset = MultiViewImageDataset(
        found.samples,
        image_size=model.input_size,
        mask_size=model.input_size if has_masks and cfg.heatmaps else 0,
        feature_size=model.feature_size,
        flip_views=flips_for(data.get("flip_views"), found.samples[0].category),
        foreground="folder" if data.foreground == "folder" else "none",  # "auto" is made by the model
        foreground_dir=data.get("foreground_dir"),
        unreadable="raise" if cfg.strict else "flag",
        resize=data.get("resize", "float"),
    )
    items = DataLoader(dataset, batch_size=None, num_workers=cfg.num_workers)  # decoded one by one
    items = progress(items, len(dataset), f"Scoring {len(dataset)} samples", cfg.progress)
    return readable_batches(items, cfg.get("batch_size") or data.eval_batch_size)


def _input_flags(found: FoundSamples, profile: DictConfig | None, strict: bool) -> dict[str, list[InputFlag]]:
    """Sample key -> how its views differ from the training images (only samples that differ).

    Flagged samples are scored with a warning; with ``strict`` they are an error. Checkpoints from before
    view profiles were stored are not checked.
    """
    if profile is None:
        log.info("The checkpoint stores no profile of its training images: input images are not checked.")
        return {}
    profile = OmegaConf.to_container(profile)
    flags = {s.key: f for s in found.samples if (f := input_flags(s, profile))}
    if not flags:
        return flags
    listing = summarize([f"{key}: {format_flags(f)}" for key, f in flags.items()])
    message = (
        f"{len(flags)} of {len(found.samples)} samples have views whose images differ from the training "
        f"images in size, aspect ratio or channel count (a moved or re-configured camera?): {listing}."
    )
    if strict:
        raise DatasetError(f"{message} Refused (strict=true); fix the cameras or pass strict=false.")
    log.warning(
        "%s They are scored anyway (column input_flags of scores.csv); strict=true refuses them.", message
    )
    return flags


def _flag_counts(flags: dict[str, list[InputFlag]]) -> dict[str, int]:
    """summary.json's ``input_flags``: flagged samples, and flagged views per kind."""
    counts = {"samples": len(flags)}
    for kind in FLAG_KINDS:
        counts[kind] = sum(flag.kind == kind for sample in flags.values() for flag in sample)
    return counts


def _check_views(found: FoundSamples, n_views: int, view_names: list[str] | None, ckpt_path: str) -> None:
    names = list(found.samples[0].view_names)
    if len(names) != n_views or (view_names is not None and names != list(view_names)):
        trained = ", ".join(view_names) if view_names else f"{n_views} views"
        raise DatasetError(
            f"The input's samples have views {', '.join(names)} but checkpoint {ckpt_path} was trained on "
            f"{trained}. Score samples taken with the same cameras, or use a checkpoint trained on these."
        )


def _sample_row(
    key: str, names: list[str], scores: list[torch.Tensor] | None, threshold: Threshold | None
) -> dict:
    """One scores.csv row from a sample's view scores [V], sample max [] and mean [] (``scores``), or, for
    a sample that could not be read (``scores=None``), its INVALID row with every score cell empty."""
    row: dict = {"key": key, "score": "", "score_mean": "", "normalised": "", "decision": INVALID}
    columns = ("score", "normalised") if threshold is not None else ("score",)
    if threshold is not None:
        row["ng_views"] = ""
    row.update({f"{column}_{name}": "" for name in names for column in columns})
    if scores is None:
        return row
    image, sample_max, sample_mean = scores
    score = float(sample_max)
    row.update(score=score, score_mean=float(sample_mean), decision="" if np.isfinite(score) else INVALID)
    if threshold is not None:
        row["normalised"] = float(threshold.normalise(sample_max))
        above = threshold.is_anomalous(image)
        row["ng_views"] = ";".join(name for name, flag in zip(names, above.tolist(), strict=True) if flag)
        if not row["decision"]:
            row["decision"] = "NG" if bool(threshold.is_anomalous(sample_max)) else "OK"
    for j, name in enumerate(names):
        row[f"score_{name}"] = float(image[j])
        if threshold is not None:
            row[f"normalised_{name}"] = float(threshold.normalise(image[j]))
    return row


def _save_heatmap(
    stage: Path,
    run_dir: Path,
    key: str,
    batch: dict,
    index: int,
    maps: torch.Tensor,
    names: list[str],
    row: dict,
    threshold: Threshold | None,
) -> str:
    """Draw one sample (images, ground-truth outlines if any, maps [V,M,M]); returns the PNG's path."""
    images = (batch["images"][index].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    masks = list(batch["masks"][index, :, 0].numpy()) if "masks" in batch else None
    scale = {} if threshold is None else {"vmin": threshold.value - threshold.scale, "vmax": threshold.value}
    title = f"{key}  {row['decision'] or 'score'} {row['score']:.3g}"
    figure = plot_sample_sheet(list(images), names, masks, list(maps.numpy()), title=title, **scale)
    name = Path("heatmaps") / f"{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.png"
    (stage / name).parent.mkdir(exist_ok=True)
    figure.savefig(stage / name, dpi=80)
    return str(run_dir / name)


def _summary(
    cfg: DictConfig, found: FoundSamples, names: list[str], rows: list[dict], threshold: Threshold | None
) -> dict:
    decisions = {d: sum(row["decision"] == d for row in rows) for d in ("OK", "NG", INVALID)}
    summary: dict = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "input": str(Path(cfg.input).resolve()),
        "layout": found.layout,
        "n_samples": len(rows),
        "views": names,
        "score": "sample score = max over views of the view image scores (score_mean: the mean)",
        "decisions": decisions,
        "invalid_samples": [row["key"] for row in rows if row["decision"] == INVALID],
        "threshold": None if threshold is None else threshold.to_dict(),
        "threshold_fitted_on": None if threshold is None else threshold.describe(),
        "normalisation": None if threshold is None else NORMALISATION,
    }
    if threshold is not None and threshold.few_samples_warning():
        summary["threshold_warning"] = threshold.few_samples_warning()
    if threshold is None:
        summary["message"] = NO_THRESHOLD
    elif found.labelled:
        truth = [row["label"] == 1 for row in rows if row["decision"] in ("OK", "NG")]
        flagged = [row["decision"] == "NG" for row in rows if row["decision"] in ("OK", "NG")]
        summary["confusion"] = {
            "true_ng": sum(t and f for t, f in zip(truth, flagged, strict=True)),
            "false_ng": sum(f and not t for t, f in zip(truth, flagged, strict=True)),
            "true_ok": sum(not t and not f for t, f in zip(truth, flagged, strict=True)),
            "false_ok": sum(t and not f for t, f in zip(truth, flagged, strict=True)),
        }
    non_finite = [row["key"] for row in rows if row["decision"] == INVALID and row["score"] != ""]
    if non_finite:
        log.warning("Non-finite scores (flagged INVALID) for samples %s", non_finite)
    return summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; exit status 3 when some samples were invalid (every output written)."""
    with entry_point(cfg.paths.output_dir):
        summary = predict(cfg)
    if summary["decisions"][INVALID]:
        raise SystemExit(EXIT_INVALID_SAMPLES)


if __name__ == "__main__":
    main()
