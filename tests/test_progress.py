"""Progress off a terminal (log lines with position, rate and time left), the training callback, peak memory."""

from __future__ import annotations

import io
import logging
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from atlas.core import memory, progress
from atlas.core.errors import ConfigError


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def lines(monkeypatch):
    """Progress lines logged on ``atlas.progress``, off a terminal, every step (interval 0)."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a tty
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    monkeypatch.setitem(progress._state, "enabled", True)
    logger = logging.getLogger("atlas.progress")
    handler = _Lines()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_track_logs_position_rate_and_time_left_off_a_terminal(lines):
    assert not progress.progress_enabled() and progress.progress_logging()
    assert list(progress.track(range(4), "ingest ds1")) == [0, 1, 2, 3]
    assert lines[0] == "ingest ds1: started (4 items)"
    assert lines[1].startswith("ingest ds1: 1/4, ") and ("s/it" in lines[1] or "it/s" in lines[1])
    assert lines[1].endswith(" left") and "~" in lines[1]
    assert lines[-1].startswith("ingest ds1: 4/4 done in ")
    assert len(lines) == 5  # start, one per step but the last, done


def test_track_lines_are_rate_limited_and_off_with_quiet(lines, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "3600")
    list(progress.track(iter(range(50)), "scoring", unit="chunk"))
    assert lines == ["scoring: started", lines[1]] and lines[1].startswith("scoring: chunk 50 done in ")
    lines.clear()
    progress.set_progress_enabled(False)
    assert list(progress.track(range(3), "quiet")) == [0, 1, 2] and lines == []


def test_track_stopped_early_logs_no_done_line(lines):
    for i in progress.track(range(10), "loop"):
        if i == 2:
            break
    assert not any("done" in line for line in lines)


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_bad_interval_env_is_a_clear_error(monkeypatch, raw):
    monkeypatch.setenv(progress.INTERVAL_ENV, raw)
    with pytest.raises(ConfigError, match=progress.INTERVAL_ENV):
        progress.progress_interval()


def test_interval_default_and_durations(monkeypatch):
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    assert progress.progress_interval() == progress.DEFAULT_INTERVAL == 30
    durations = [progress.format_duration(s) for s in (4.24, 45, 102, 38 * 60, 2.5 * 3600)]
    assert durations == ["4.2 s", "45 s", "1.7 min", "38 min", "2.5 h"]


def test_epoch_callback_logs_epochs_rate_and_time_left(lines):
    from atlas.integrate.progress_log import EpochProgressLog, epoch_logger

    cb = EpochProgressLog("integrate")
    trainer = SimpleNamespace(is_global_zero=True, max_epochs=60, current_epoch=0)
    cb.on_train_start(trainer, None)
    for epoch in range(3):
        trainer.current_epoch = epoch
        cb.on_train_epoch_end(trainer, None)
    cb.on_train_end(trainer, None)
    assert lines[0] == "integrate: started (60 epochs)"
    assert lines[1].startswith("integrate: epoch 1/60, ") and "epoch/s" in lines[1] and lines[1].endswith(" left")
    assert lines[3].startswith("integrate: epoch 3/60, ")
    assert lines[-1].startswith("integrate: epoch 3/60 done in ") and lines[-1].endswith("(stopped early)")
    lines.clear()
    long_epochs = SimpleNamespace(is_global_zero=True, max_epochs=2, current_epoch=0, num_training_batches=4)
    cb.on_train_start(long_epochs, None)
    for batch_idx in range(4):  # inside the epoch: fractional positions; the epoch's end logs the whole one
        cb.on_train_batch_end(long_epochs, None, None, None, batch_idx)
    cb.on_train_epoch_end(long_epochs, None)
    assert [ln.split(",")[0] for ln in lines[1:]] == ["integrate: epoch 0.25/2", "integrate: epoch 0.5/2",
                                                      "integrate: epoch 0.75/2", "integrate: epoch 1/2"]
    assert "min left" in lines[1] or "s left" in lines[1]
    cb.on_train_end(long_epochs, None)
    lines.clear()
    other_rank = SimpleNamespace(is_global_zero=False, max_epochs=60, current_epoch=0)
    cb.on_train_start(other_rank, None)
    cb.on_train_epoch_end(other_rank, None)
    cb.on_train_end(other_rank, None)
    assert lines == []
    assert [type(c) for c in epoch_logger("query")] == [EpochProgressLog]
    progress.set_progress_enabled(False)
    assert epoch_logger("query") == []


def test_epoch_callback_in_a_real_lightning_fit(lines, tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    import torch

    from atlas.integrate.progress_log import EpochProgressLog

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.lin(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                         logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         callbacks=[EpochProgressLog("query")])
    trainer.fit(Tiny(), data)
    assert lines[0] == "query: started (2 epochs)"
    assert [ln.split(",")[0] for ln in lines[1:4]] == ["query: epoch 0.5/2", "query: epoch 1/2", "query: epoch 1.5/2"]
    assert lines[2].endswith(" left")
    assert lines[4].startswith("query: epoch 2/2 done in ") and "stopped early" not in lines[4]
    assert len(lines) == 5


def test_peak_memory_is_positive_and_per_step_on_linux():
    assert memory.peak_rss_bytes() > 0
    with memory.PeakMemory() as before:
        pass
    with memory.PeakMemory() as during:
        block = np.ones(64 * 1024**2 // 8)  # 64 MiB touched
        del block
    assert before.rss_gib > 0 and during.rss_gib > 0 and before.gpu_gib is None
    if sys.platform == "linux" and memory.reset_peak_rss():
        assert during.per_step
        assert during.rss_gib - before.rss_gib > 0.04  # the block shows in this step's peak only
