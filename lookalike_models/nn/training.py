"""The epoch loop the StarSpace encoder, RALM's user model and the affinity MLP share: measure the start,
train an epoch, measure again, stop when the validation value has not improved for ``patience`` epochs,
and keep the best state (``EarlyStopping``). What an epoch does, and with which random generator, stays the
caller's: each of them draws its batches its own way (and must keep drawing them so, for its numbers to
stay what they were)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lookalike_models.nn.early_stopping import EarlyStopping
from lookalike_models.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochPlan:
    """At most ``max_epochs`` epochs of ``steps`` ``unit``s each; ``label`` names the work in logs and
    progress, ``value`` the validation value in the curve (e.g. ``"transfer_error"``)."""

    label: str
    max_epochs: int
    steps: int
    unit: str = "steps"
    value: str = "validation"


@dataclass
class EpochCurve:
    """Per epoch ``{"epoch", "loss", <plan.value>, "seconds"}`` (epoch 0: the start, loss NaN), and the
    epoch whose state the model holds at the end (the best one with early stopping, else the last)."""

    epochs: list[dict]
    best_epoch: int


def train_epochs(
    model: nn.Module,
    plan: EpochPlan,
    run_epoch: Callable[[int, Progress], float],
    measure: Callable[[], float],
    stopper: EarlyStopping | None = None,
) -> EpochCurve:
    """``run_epoch(epoch, progress)`` trains one epoch (calling ``progress.advance()`` per step) and returns
    its mean loss; ``measure()`` gives the validation value (NaN: nothing to measure), before training and
    after each epoch. With a ``stopper`` training stops when it says so and the model gets its best state
    back; a start that cannot be measured (NaN) does not count as an epoch without gain."""
    start_value = measure()
    epochs = [{"epoch": 0, "loss": float("nan"), plan.value: start_value, "seconds": 0.0}]
    name = plan.value.replace("_", " ")
    log.info(
        "%s: start %s %.4f; up to %d epochs of %d %s",
        plan.label,
        name,
        start_value,
        plan.max_epochs,
        plan.steps,
        plan.unit,
    )
    if stopper is not None and not math.isnan(start_value):
        stopper.stop(model, start_value)
    best_epoch = 0
    with Progress(plan.label, plan.max_epochs * plan.steps, plan.unit) as progress:
        for epoch in range(1, plan.max_epochs + 1):
            began = time.perf_counter()
            model.train()
            loss = run_epoch(epoch, progress)
            value = measure()
            epochs.append({"epoch": epoch, "loss": loss, plan.value: value, "seconds": time.perf_counter() - began})
            log.info("%s: epoch %d loss %.4f, %s %.4f", plan.label, epoch, loss, name, value)
            if stopper is None:
                best_epoch = epoch
                continue
            done = stopper.stop(model, value)
            best_epoch = epoch if stopper.waited == 0 else best_epoch
            if done:
                progress.set_total(progress.done)  # early stop: the remaining epochs will not run
                break
    if stopper is not None:
        stopper.restore(model)
    model.eval()
    return EpochCurve(epochs, best_epoch)
