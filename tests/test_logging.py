"""The CLI keeps the terminal to atlas's own lines: Lightning's chatter only with --verbose."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from atlas.cli import _configure_logging

    _configure_logging(logging.DEBUG if sys.argv[1] == "verbose" else logging.INFO)
    import lightning.pytorch as pl
    import torch

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.lin(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    pl.seed_everything(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=sys.argv[2])
    trainer.fit(Tiny(), data)
    logging.getLogger("atlas.test").info("atlas line")
    """
)
CHATTER = ("GPU available", "TPU available", "litlogger", "LeafSpec", "Seed set to", "Trainer.fit` stopped")


def _run(mode: str, tmp_path) -> str:
    res = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr


def test_lightning_chatter_hidden_without_verbose(tmp_path):
    pytest.importorskip("lightning")
    out = _run("quiet", tmp_path)
    assert "atlas line" in out
    assert [c for c in CHATTER if c in out] == []


def test_lightning_detail_with_verbose(tmp_path):
    pytest.importorskip("lightning")
    out = _run("verbose", tmp_path)
    assert "GPU available" in out and "LeafSpec" in out and "atlas line" in out
