"""Training progress as log lines, for runs off a terminal (batch jobs, ``docker run`` to a log file).

Lightning's progress bar is off there (:func:`atlas.core.progress.progress_enabled`), so without this
a long training prints nothing until it ends. :func:`epoch_logger` gives the callback to add to the
trainer: it logs ``integrate: epoch 12/60, 48 s/epoch, ~38 min left`` at most every
``ATLAS_PROGRESS_INTERVAL`` seconds (default 30), also inside an epoch (``epoch 0.35/2``: a large atlas
trains few, long epochs), plus a first and a last line, on global rank 0 only.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from ..core.progress import ProgressLog, progress_logging

__all__ = ["EpochProgressLog", "epoch_logger"]


class EpochProgressLog(Callback):
    """A Lightning callback logging the epoch, seconds per epoch and time left (see the module docstring).

    Parameters
    ----------
    prefix
        Starts every line (``"integrate"``, ``"query"``).
    interval
        Seconds between two lines (default: ``ATLAS_PROGRESS_INTERVAL`` or 30).
    """

    def __init__(self, prefix: str, interval: float | None = None):
        self.prefix = prefix
        self.interval = interval
        self._plog: ProgressLog | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self._plog = ProgressLog(self.prefix, total, unit="epoch", interval=self.interval)
        self._plog.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Inside long epochs (an atlas of millions of cells trains a few epochs of many steps), log the
        fractional epoch (``epoch 0.35/2``) at the same interval."""
        n_batches = getattr(trainer, "num_training_batches", None)
        if self._plog is None or not n_batches or n_batches == float("inf") or batch_idx + 1 >= n_batches:
            return
        self._plog.update(round(trainer.current_epoch + (batch_idx + 1) / n_batches, 2))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._plog is not None:
            self._plog.update(trainer.current_epoch + 1)  # current_epoch is 0-based here

    def on_train_end(self, trainer, pl_module) -> None:
        if self._plog is None:
            return
        plog, self._plog = self._plog, None
        stopped_early = plog.total is not None and plog.n < plog.total
        plog.finish("stopped early" if stopped_early else "")


def epoch_logger(prefix: str) -> list[Callback]:
    """``[EpochProgressLog(prefix)]`` when progress is logged as lines, else ``[]`` (bar on a terminal, or --quiet)."""
    return [EpochProgressLog(prefix)] if progress_logging() else []
