"""Stopping training on the held-out normal samples' NLL (:class:`ValidationNLLStopping`)."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback

from multiflow_pl.callbacks.stopping_rule import Check, StoppingRule

log = logging.getLogger(__name__)


class ValidationNLLStopping(Callback):
    """Stop training by :class:`~multiflow_pl.callbacks.stopping_rule.StoppingRule` on the validation NLL.

    At every validation check (every ``trainer.val_check_interval`` steps) it reads the module's
    ``val_nll`` (the masked NLL of the held-out normal samples of ``data.val_fraction``, without noise
    conditioning: the training loss's formula), logs ``val/nll_smoothed`` and a line per check, and stops
    training on a plateau after ``min_steps`` or at ``trainer.max_steps`` (the cap). When the last step
    (the cap, or the end of ``trainer.max_epochs``) falls between two checks, it asks for one more check
    there, so that the last checkpoint and its OK/NG threshold belong to the final weights. The test set is
    never read.

    Args:
        min_steps: the floor: no stop on a plateau before this many optimizer steps.
        patience: checks without improvement of the smoothed NLL that make a plateau.
        min_delta: the least decrease of the smoothed NLL that counts as an improvement.
        smoothing: weight of the past in the NLL's moving average, in [0, 1).
    """

    def __init__(self, min_steps: int, patience: int, min_delta: float = 0.0, smoothing: float = 0.0) -> None:
        self.min_steps, self.patience = min_steps, patience
        self.min_delta, self.smoothing = min_delta, smoothing
        self.rule = StoppingRule(min_steps, None, patience, min_delta, smoothing)

    @property
    def checks(self) -> list[Check]:
        """The validation checks so far, with the rule's view of each."""
        return self.rule.checks

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checks = self.rule.state_dict()
        self.rule = StoppingRule(
            self.min_steps, trainer.max_steps, self.patience, self.min_delta, self.smoothing
        )
        self.rule.load_state_dict(checks)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and not getattr(datamodule, "has_validation", True):
            log.warning(
                "No held-out samples (data.val_fraction=0): training cannot stop on their NLL and runs to "
                "trainer.max_steps=%s.",
                trainer.max_steps,
            )

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        """At the last step (``max_steps``, or the last batch of ``max_epochs``) between two checks, ask
        for one more: Lightning validates before it stops on ``should_stop``."""
        at_cap = 0 <= trainer.max_steps <= trainer.global_step
        last_epoch = trainer.is_last_batch and 0 < (trainer.max_epochs or -1) <= trainer.current_epoch + 1
        checked = bool(self.checks) and self.checks[-1].step == trainer.global_step
        if (at_cap or last_epoch) and not checked:
            trainer.should_stop = True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or pl_module.val_nll.update_count == 0:
            return
        check = self.rule.update(trainer.global_step, float(pl_module.val_nll.compute()))
        pl_module.log("val/nll_smoothed", check.smoothed, rank_zero_only=True)
        if trainer.is_global_zero:
            log.info(
                "step %d: smoothed validation NLL %.4f (best %.4f, %d/%d checks without improvement)",
                check.step,
                check.smoothed,
                check.best,
                check.stale,
                self.patience,
            )
        if check.stop:
            trainer.should_stop = True
            if trainer.is_global_zero:
                reason = (
                    "the cap, trainer.max_steps" if check.stop == "cap" else "a plateau of the smoothed NLL"
                )
                log.info("Training stops at step %d: %s.", check.step, reason)

    def state_dict(self) -> dict:
        return self.rule.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.rule.load_state_dict(state_dict)
