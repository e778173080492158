"""OK/NG thresholds: fitting (quantile, F1-optimal), normalisation, the validation split, and the threshold
stored in a trained checkpoint."""

from __future__ import annotations

import io
import math

import lightning as L
import numpy as np
import pytest
import torch

from multiflow_pl.callbacks.threshold import ThresholdFitting
from multiflow_pl.data.datamodule import held_out
from multiflow_pl.data.sample import MultiViewSample, ViewRecord
from multiflow_pl.models.threshold import (
    CHECKPOINT_KEY,
    Threshold,
    f1_optimal_threshold,
    fit_threshold,
    threshold_from_checkpoint,
)
from multiflow_pl.pipeline import build_data_and_model, load_trained_module


def test_normal_samples_give_the_quantile_and_median():
    scores = torch.linspace(-1.0, 3.0, 101)
    threshold = fit_threshold(scores, torch.zeros(101), quantile=0.9)
    assert threshold.method == "quantile" and threshold.quantile == 0.9
    assert threshold.value == pytest.approx(float(torch.quantile(scores.double(), 0.9)))
    assert threshold.center == pytest.approx(1.0)
    assert (threshold.n_normal, threshold.n_anomalous) == (101, 0)
    assert threshold.f1 is None


def test_labelled_samples_give_the_f1_optimal_threshold():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0, 1, 40), rng.normal(1.5, 1, 20)])
    labels = np.array([0] * 40 + [1] * 20)
    threshold = fit_threshold(torch.from_numpy(scores), torch.from_numpy(labels))
    assert threshold.method == "f1" and threshold.n_anomalous == 20

    def f1_at(t: float) -> float:
        flagged = scores > t
        true_pos = np.sum(flagged & (labels == 1))
        return 2 * true_pos / (flagged.sum() + (labels == 1).sum())

    candidates = np.concatenate([scores, scores - 1e-9, [scores.min() - 1]])
    assert threshold.f1 == pytest.approx(max(f1_at(t) for t in candidates))
    assert f1_at(threshold.value) == pytest.approx(threshold.f1)


def test_f1_threshold_separates_perfectly_and_never_splits_ties():
    value, f1 = f1_optimal_threshold(np.array([0.1, 0.2, 0.9, 1.0]), np.array([0, 0, 1, 1]))
    assert f1 == 1.0 and value == pytest.approx(0.55)
    value, _ = f1_optimal_threshold(np.array([0.5, 0.5, 0.5, 0.1]), np.array([1, 0, 1, 0]))
    assert value < 0.5  # the three tied scores are flagged together


def test_normalised_scores_are_affine_with_one_at_the_threshold():
    threshold = Threshold(value=2.0, center=-1.0, method="quantile")
    scores = torch.tensor([-1.0, 0.5, 2.0, 5.0])
    assert threshold.normalise(scores).tolist() == pytest.approx([0.0, 0.5, 1.0, 2.0])
    assert threshold.is_anomalous(scores).tolist() == [False, False, False, True]
    single = fit_threshold(torch.tensor([0.4]), torch.tensor([0]))  # one normal sample: value == center
    assert single.scale == pytest.approx(0.4) and float(single.normalise(torch.tensor(0.4))) == 1.0


def test_threshold_round_trips_through_a_weights_only_checkpoint():
    threshold = fit_threshold(torch.arange(10.0), torch.zeros(10))
    buffer = io.BytesIO()
    torch.save({CHECKPOINT_KEY: threshold.to_dict()}, buffer)
    buffer.seek(0)
    loaded = threshold_from_checkpoint(torch.load(buffer, weights_only=True))
    assert loaded == threshold
    assert threshold_from_checkpoint({}) is None


def test_fitting_refuses_bad_input():
    with pytest.raises(FloatingPointError, match="NaN"):
        fit_threshold(torch.tensor([0.0, math.nan]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="at least one normal"):
        fit_threshold(torch.tensor([1.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="quantile"):
        fit_threshold(torch.tensor([1.0]), torch.tensor([0]), quantile=1.5)


def _samples(n: int, label: int, prefix: str = "s") -> list[MultiViewSample]:
    view = ViewRecord("C1", None, None, label, "OK")  # paths are not needed to split
    return [MultiViewSample(f"{prefix}{i:03d}", "toy", label, (view,)) for i in range(n)]


def test_held_out_split_is_stratified_deterministic_and_stable():
    samples = _samples(40, 0) + _samples(10, 1)
    chosen = held_out(samples, 0.2)
    assert sum(s.label == 0 for s in chosen) == 8 and sum(s.label == 1 for s in chosen) == 2
    assert chosen == held_out(list(reversed(samples)), 0.2)
    grown = held_out(_samples(80, 0), 0.1)  # twice as many samples: the first choices stay held out
    assert {s.key for s in chosen if s.label == 0} & {s.key for s in grown}
    assert held_out(samples, 0.0) == []
    assert len(held_out(_samples(3, 0), 0.01)) == 1
    with pytest.raises(ValueError, match="leaves none"):
        held_out(_samples(1, 0), 0.5)


def test_checkpoint_holds_the_threshold_of_its_own_weights(tiny_run):
    module, run_cfg, checkpoint = load_trained_module(tiny_run.checkpoint)
    stored = threshold_from_checkpoint(checkpoint)
    assert stored is not None and stored.method == "quantile" and stored.n_normal == 1
    assert checkpoint["epoch"] == run_cfg.trainer.max_epochs - 1  # saved after the last fit
    datamodule, _ = build_data_and_model(run_cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    assert set(batch["key"]).isdisjoint(s.key for s in datamodule.datasets["train"].samples)
    scores = module.score_batch(batch).sample_max
    assert fit_threshold(scores, batch["label"], stored.quantile) == stored


def test_labelled_validation_split_gives_an_f1_threshold(tiny_run):
    module, run_cfg, _ = load_trained_module(tiny_run.checkpoint)
    run_cfg.data.val_from_test = 0.34  # one normal and one anomalous test sample move to validation
    datamodule, _ = build_data_and_model(run_cfg)
    fitting = ThresholdFitting()
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[fitting],
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)
    threshold = fitting.threshold
    assert threshold.method == "f1" and (threshold.n_normal, threshold.n_anomalous) == (2, 1)
    assert 0 < threshold.f1 <= 1 and threshold.quantile is None
    validation = {s.key for s in datamodule.split_samples("val")}
    tested = {s.key for s in datamodule.split_samples("test")}
    assert len(tested) == 6 - 2 and tested.isdisjoint(validation)


def test_few_held_out_samples_give_a_warning_that_says_how_to_get_more():
    few = fit_threshold(torch.arange(5.0), torch.zeros(5), quantile=0.99)
    assert few.value == pytest.approx(3.96) and few.describe().endswith("of 5 held-out normal samples")
    warning = few.few_samples_warning()
    assert "only 5 held-out normal samples (fewer than 20)" in warning
    assert "data.val_fraction" in warning and "data.val_from_test" in warning
    assert fit_threshold(torch.arange(20.0), torch.zeros(20)).few_samples_warning() is None
    labelled = fit_threshold(torch.tensor([0.0, 1.0, 5.0]), torch.tensor([0, 0, 1]))
    assert labelled.describe().startswith("the F1-optimal threshold (F1 1.000) on 2 normal and 1 anomalous")
