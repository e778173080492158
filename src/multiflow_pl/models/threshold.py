"""The OK/NG decision threshold on sample scores, fitted on validation samples and kept in checkpoints.

Two ways to fit it, chosen by the validation labels:

* only normal samples (held out of the training split): the ``quantile`` of their scores, so about
  ``1 - quantile`` of normal parts are flagged;
* normal and anomalous samples (a labelled validation split): the threshold with the best F1 score
  on them, placed halfway between two neighbouring scores.

Scores are negative log-likelihoods and may be negative, so the normalised score is an affine map rather
than a ratio: ``normalised = (score - center) / (threshold - center)`` with ``center`` the median score
of the normal validation samples. It is 0 for a typical normal part and 1 at the threshold; a sample is
NG exactly when its normalised score exceeds 1 (its raw score exceeds the threshold). See
:attr:`Threshold.scale` for validation sets too small to give ``threshold > center``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

NORMALISATION = (
    "normalised = 1 + (score - threshold) / scale, scale = threshold - center, center = median sample score "
    "of the normal validation samples: 0 is a typical normal part, 1 the threshold, above 1 is NG."
)
"""How normalised scores are defined, for output files."""

MIN_NORMAL_SAMPLES = 20
"""Fewer held-out normal samples than this give a threshold that says little (and a warning)."""

CHECKPOINT_KEY = "multiflow_threshold"
"""Where :meth:`Threshold.to_dict` is stored in a checkpoint (plain floats and strings only)."""


@dataclass(frozen=True)
class Threshold:
    """A fitted decision threshold on sample scores (max over views of the image scores).

    Attributes:
        value: a sample is NG when its score is above ``value``.
        center: median score of the normal validation samples (normalised score 0).
        method: ``"quantile"`` or ``"f1"``.
        quantile: the quantile used (``"quantile"`` method), else None.
        f1: F1 score on the validation samples at ``value`` (``"f1"`` method), else None.
        n_normal, n_anomalous: validation samples it was fitted on.
    """

    value: float
    center: float
    method: str
    quantile: float | None = None
    f1: float | None = None
    n_normal: int = 0
    n_anomalous: int = 0

    @property
    def scale(self) -> float:
        """``value - center``; ``|value|`` (or 1) when the validation set was too small to place the
        threshold above the normal median (e.g. a single normal sample)."""
        spread = self.value - self.center
        return spread if spread > 0 else (abs(self.value) or 1.0)

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores of any shape -> normalised scores (1 at the threshold, 0 at the normal median)."""
        return 1.0 + (scores - self.value) / self.scale

    def is_anomalous(self, scores: torch.Tensor) -> torch.Tensor:
        """Bool tensor: score above the threshold (NaN scores are not anomalous here; flag them apart)."""
        return scores > self.value

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain types only, so checkpoints stay loadable with ``torch.load(weights_only=True)``."""
        return asdict(self)

    def describe(self) -> str:
        """How the threshold was fitted, in words (for summary files)."""
        if self.method == "quantile":
            return f"the {self.quantile} quantile of the scores of {self.n_normal} held-out normal samples"
        return (
            f"the F1-optimal threshold (F1 {self.f1:.3f}) on {self.n_normal} normal and {self.n_anomalous} "
            "anomalous validation samples"
        )

    def few_samples_warning(self) -> str | None:
        """A warning when fewer than :data:`MIN_NORMAL_SAMPLES` normal samples fitted it, else None."""
        if self.n_normal >= MIN_NORMAL_SAMPLES:
            return None
        effect = (
            f"the {self.quantile} quantile of so few scores is about their maximum"
            if self.method == "quantile"
            else "the normal side of the F1 trade-off rests on very few scores"
        )
        return (
            f"The OK/NG threshold was fitted on only {self.n_normal} held-out normal samples (fewer than "
            f"{MIN_NORMAL_SAMPLES}): {effect}, so the share of normal parts flagged NG is unknown. Hold out "
            "more: raise data.val_fraction (the share of normal training samples kept out of training), add "
            "normal training samples, or move labelled test samples to validation with data.val_from_test."
        )

    @classmethod
    def from_dict(cls, data: dict) -> Threshold:
        return cls(**data)


def threshold_from_checkpoint(checkpoint: dict) -> Threshold | None:
    """The threshold stored in a checkpoint dict, or None when none was fitted."""
    saved = checkpoint.get(CHECKPOINT_KEY)
    return Threshold.from_dict(saved) if saved else None


def fit_threshold(scores: torch.Tensor, labels: torch.Tensor, quantile: float = 0.99) -> Threshold:
    """Fit on validation sample scores ``[N]`` with labels ``[N]`` (0 normal, 1 anomalous).

    Quantile of the normal scores when all samples are normal, F1-optimal threshold otherwise.
    """
    scores = scores.detach().double().cpu().flatten()
    labels = labels.detach().cpu().flatten().long()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.numel()} scores but {labels.numel()} labels.")
    if not torch.isfinite(scores).all():
        raise FloatingPointError(
            "Validation scores contain NaN or infinite values; no threshold can be fitted."
        )
    normal = scores[labels == 0]
    anomalous = scores[labels == 1]
    if normal.numel() == 0:
        raise ValueError("Fitting a threshold needs at least one normal validation sample.")
    center = float(normal.median())
    counts = {"n_normal": int(normal.numel()), "n_anomalous": int(anomalous.numel())}
    if anomalous.numel() == 0:
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"threshold quantile {quantile} must lie in (0, 1].")
        value = float(torch.quantile(normal, quantile))
        return Threshold(value, center, "quantile", quantile=quantile, **counts)
    value, f1 = f1_optimal_threshold(scores.numpy(), labels.numpy())
    return Threshold(value, center, "f1", f1=f1, **counts)


def f1_optimal_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold t maximising F1 of the decision ``score > t``, and that F1.

    Candidates lie halfway between neighbouring distinct scores (and below the lowest one); among equal
    F1 the highest threshold wins (fewer false alarms).
    """
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order] == 1
    true_pos = np.cumsum(hits)
    flagged = np.arange(1, len(ranked) + 1)
    last_of_tie = np.append(ranked[1:] < ranked[:-1], True)  # cut only between distinct scores
    f1 = np.where(last_of_tie, 2 * true_pos / (flagged + hits.sum()), -1.0)
    best = int(np.argmax(f1))  # first maximum = fewest flagged = highest threshold
    below = ranked[best + 1] if best + 1 < len(ranked) else ranked[best] - 1.0
    return float((ranked[best] + below) / 2), float(f1[best])
