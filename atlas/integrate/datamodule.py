"""A fast data path for scvi-tools: the count matrix lives on the training device, batches are sliced there.

scvi-tools' default loader indexes the AnnData on the CPU for every mini-batch (scipy row gather,
densify, numpy -> torch, host -> device copy). :class:`FastDataModule` instead copies the CSR
count matrix (and the registered obs codes) to the device once, and builds each mini-batch with a
CSR row gather that densifies on the device. With ``chunk_cells`` it streams shuffled chunks of
rows instead (for matrices larger than the device memory): each chunk is a random subset of cells,
so mini-batches are drawn exactly as with a full shuffle.

It is a plain Lightning ``LightningDataModule`` passed as ``model.train(datamodule=...)``:

* the train / validation split is scvi-tools' own (``DataSplitter`` or, for scANVI,
  ``SemiSupervisedDataSplitter``, seeded by ``scvi.settings.seed``), so validation ELBOs are
  comparable between the two data paths;
* batches are dicts keyed by the model's registry (``scvi.REGISTRY_KEYS``: ``X``, ``batch``,
  ``labels``, ``extra_categorical_covs``, ...) with the dtypes and shapes of ``AnnDataLoader``;
  for scANVI the training batches are ``[all cells, labelled cells]`` pairs, as scvi-tools'
  ``SemiSupervisedDataLoader`` yields them;
* under DDP each rank takes an equal share of one seeded permutation per epoch.
"""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch

log = logging.getLogger(__name__)

_MIN_LAST_BATCH = 3  # BatchNorm cannot train on a batch of one; scvi-tools moves tiny tails to validation


def csr_rows_to_dense(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    data: torch.Tensor,
    rows: torch.Tensor,
    n_cols: int,
    total: int | None = None,
) -> torch.Tensor:
    """Dense ``(len(rows), n_cols)`` tensor of the CSR rows ``rows``, built on the tensors' device.

    Parameters
    ----------
    indptr
        Row pointers (int64, ``n_rows + 1``).
    indices
        Column indices (int32 or int64).
    data
        Values.
    rows
        Rows to gather, in output order (int64, same device).
    n_cols
        Number of columns.
    total
        Number of stored values in those rows, when known on the host (saves a device sync).

    Returns
    -------
    The dense rows, dtype of ``data``.
    """
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    if total is None:
        total = int(lens.sum())
    out = torch.zeros((rows.shape[0], n_cols), dtype=data.dtype, device=data.device)
    if total == 0:
        return out
    row_of = torch.repeat_interleave(torch.arange(rows.shape[0], device=data.device), lens, output_size=total)
    first = torch.cumsum(lens, 0) - lens  # where each row's values start among the gathered ones
    src = torch.arange(total, device=data.device) + torch.repeat_interleave(
        starts - first, lens, output_size=total
    )
    out[row_of, indices[src].long()] = data[src]
    return out


def _registry_dtype(key: str) -> np.dtype:
    from scvi import REGISTRY_KEYS as K

    if key in (K.BATCH_KEY, K.LABELS_KEY, K.CAT_COVS_KEY, K.INDICES_KEY):
        return np.dtype(np.int64)
    return np.dtype(np.float32)


class _Batches:
    """One pass over a split; ``len`` is the number of batches (Lightning reads it)."""

    def __init__(self, dm: FastDataModule, split: str):
        self.dm, self.split = dm, split

    def __len__(self) -> int:
        return self.dm._n_batches(self.split)

    def __iter__(self):
        return self.dm._iterate(self.split)


class FastDataModule(pl.LightningDataModule):
    """Mini-batches of an scvi-tools model's registered data, gathered on the training device.

    Parameters
    ----------
    adata_manager
        The model's ``AnnDataManager`` (``model.adata_manager``) after ``setup_anndata``.
    batch_size
        Cells per mini-batch.
    train_size, validation_size, shuffle_set_split
        As in ``model.train``; the split is computed by scvi-tools' own splitter.
    seed
        Seeds the per-epoch shuffles (the split itself follows ``scvi.settings.seed``).
    chunk_cells
        ``None``: copy the whole matrix to the device once. An int: keep it on the host and copy
        shuffled chunks of this many cells (rounded to whole batches) per step of an epoch.
    pin_memory
        Pin host chunks before copying them to a CUDA device (streaming mode only).
    gather
        ``"auto"``: gather rows with torch on a CUDA device and with scipy's C++ row gather on the
        CPU (torch's CPU scatter is ~50x slower there); ``"torch"`` or ``"scipy"`` force one (tests).
    device
        Where batches are built when no trainer is attached (default CPU); under a trainer, the
        strategy's root device.
    """

    def __init__(
        self,
        adata_manager,
        *,
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        seed: int = 0,
        chunk_cells: int | None = None,
        pin_memory: bool = True,
        gather: str = "auto",
        device: str | torch.device | None = None,
    ):
        super().__init__()
        from scvi import REGISTRY_KEYS as K
        from scvi.dataloaders import DataSplitter, SemiSupervisedDataSplitter

        self.adata_manager = adata_manager
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.pin_memory = pin_memory
        self.chunk_cells = (
            None if chunk_cells is None else max(1, chunk_cells // self.batch_size) * self.batch_size
        )

        labels_state = (
            adata_manager.get_state_registry(K.LABELS_KEY)
            if K.LABELS_KEY in adata_manager.data_registry
            else {}
        )
        self.unlabeled_code = None
        self.semi_supervised = "unlabeled_category" in labels_state
        splitter_cls = SemiSupervisedDataSplitter if self.semi_supervised else DataSplitter
        splitter = splitter_cls(
            adata_manager,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            batch_size=self.batch_size,
        )
        splitter.setup()
        self.train_idx = np.asarray(splitter.train_idx, dtype=np.int64)
        self.val_idx = np.asarray(splitter.val_idx, dtype=np.int64)
        self.test_idx = np.asarray(splitter.test_idx, dtype=np.int64)
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)
        self.n_obs = adata_manager.adata.n_obs  # scvi-tools reads this for its default max_epochs

        # The registered fields, in registry order (the order AnnDataLoader yields them).
        self.keys = list(adata_manager.data_registry.keys())
        if K.MINIFY_TYPE_KEY in self.keys or getattr(adata_manager.adata, "isbacked", False):
            raise ValueError(
                "FastDataModule needs an in-memory, non-minified AnnData; use data_loader='scvi'"
            )
        X = adata_manager.get_from_registry(K.X_KEY)
        X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        self._X = X
        self._host: dict[str, np.ndarray] = {}
        for key in self.keys:
            if key == K.X_KEY:
                continue
            arr = adata_manager.get_from_registry(key)
            arr = arr.to_numpy() if hasattr(arr, "to_numpy") else np.asarray(arr)
            self._host[key] = np.ascontiguousarray(arr.reshape(arr.shape[0], -1).astype(_registry_dtype(key)))
        if self.semi_supervised:
            self.unlabeled_code = int(
                np.flatnonzero(labels_state["categorical_mapping"] == labels_state["unlabeled_category"])[0]
            )
            labelled = self._host[K.LABELS_KEY][:, 0] != self.unlabeled_code
            self.labelled_train_idx = self.train_idx[labelled[self.train_idx]]
            self.labelled_val_idx = self.val_idx[labelled[self.val_idx]]
        self._row_nnz = np.diff(X.indptr).astype(np.int64)
        self._dev: dict[str, torch.Tensor] = {}
        self._device = torch.device("cpu")
        self._default_device = torch.device(device) if device is not None else torch.device("cpu")
        self._rank, self._world = 0, 1
        self._rng = np.random.default_rng(self.seed)
        if gather not in ("auto", "torch", "scipy"):
            raise ValueError(f"gather={gather!r}: use auto, torch or scipy")
        self._gather_opt = gather
        self.gather = "scipy"

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Copy the data to the training device (the strategy's root device when attached to a trainer)."""
        trainer = getattr(self, "trainer", None)
        device = self._default_device
        if trainer is not None:
            device = trainer.strategy.root_device
            self._rank, self._world = int(trainer.global_rank), int(trainer.world_size)
        if self._dev and device == self._device:
            return
        self._dev.clear()
        self._device = device
        self.gather = (
            self._gather_opt if self._gather_opt != "auto" else ("scipy" if device.type == "cpu" else "torch")
        )
        if self.gather == "scipy" and device.type != "cpu":
            raise ValueError("gather='scipy' builds batches on the host; it needs the CPU device")
        moved = 0
        for key, arr in self._host.items():
            self._dev[key] = torch.from_numpy(arr).to(device)
            moved += arr.nbytes
        mode = "host rows gathered by scipy"
        if self.gather == "torch" and self.chunk_cells is None:
            X = self._X
            self._dev["_indptr"] = torch.from_numpy(X.indptr.astype(np.int64)).to(device)
            self._dev["_indices"] = torch.from_numpy(X.indices).to(device)
            self._dev["_data"] = torch.from_numpy(X.data.astype(np.float32, copy=False)).to(device)
            moved += X.indptr.size * 8 + X.indices.nbytes + X.data.size * 4
            mode = "whole matrix, rows gathered by torch"
        elif self.gather == "torch":
            mode = f"streaming chunks of {self.chunk_cells} cells, rows gathered by torch"
        verb = "referenced on" if device.type == "cpu" else "copied to"
        log.info("fast data path: %.3f GB %s %s (%s)", moved / 1e9, verb, device, mode)
        if self._world > 1:
            log.info(
                "fast data path: DDP rank %d of %d takes %d of %d training cells per epoch (%d batches)",
                self._rank,
                self._world,
                self._n_rows("train"),
                self.n_train,
                self._n_batches("train"),
            )

    def teardown(self, stage: str | None = None) -> None:
        """Free the device copies (inference afterwards uses scvi-tools' own loader)."""
        self._dev.clear()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def train_dataloader(self):
        """Shuffled training batches (``[all, labelled]`` pairs for scANVI)."""
        return _Batches(self, "train")

    def val_dataloader(self):
        """Validation batches in split order, or ``[]`` without a validation set."""
        return _Batches(self, "val") if self.n_val > 0 else []

    # ------------------------------------------------------------------ batching
    def _shard(self, idx: np.ndarray, pad: bool) -> np.ndarray:
        """This rank's equal share of ``idx`` (DDP); padded by wrapping or truncated."""
        if self._world == 1:
            return idx
        per = math.ceil(len(idx) / self._world) if pad else len(idx) // self._world
        if pad and per * self._world > len(idx):
            idx = np.concatenate([idx, idx[: per * self._world - len(idx)]])
        return idx[self._rank :: self._world][:per]

    def _epoch_rows(self, split: str) -> np.ndarray:
        if split == "train":
            return self._shard(self.train_idx[self._rng.permutation(self.n_train)], pad=False)
        return self._shard(self.val_idx, pad=True)

    def _n_rows(self, split: str) -> int:
        n = self.n_train if split == "train" else self.n_val
        return n // self._world if split == "train" else math.ceil(n / self._world)

    def _n_batches(self, split: str) -> int:
        n = self._n_rows(split)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest >= (_MIN_LAST_BATCH if split == "train" else 1) else 0)

    def _to_device(self, X: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = (X.indptr.astype(np.int64), X.indices, X.data.astype(np.float32, copy=False))
        tensors = [torch.from_numpy(np.ascontiguousarray(p)) for p in parts]
        if self._device.type == "cuda":
            if self.pin_memory:
                tensors = [t.pin_memory() for t in tensors]
            return tuple(t.to(self._device, non_blocking=True) for t in tensors)
        return tuple(tensors)

    def _make_batch(
        self, rows_h: np.ndarray, rows_d: torch.Tensor, csr, local_d: torch.Tensor | None, total: int
    ) -> dict:
        from scvi import REGISTRY_KEYS as K

        out = {}
        for key in self.keys:
            if key != K.X_KEY:
                out[key] = self._dev[key][rows_d]
            elif self.gather == "scipy":
                out[key] = torch.from_numpy(self._X[rows_h].toarray())
            else:
                rows = rows_d if local_d is None else local_d
                out[key] = csr_rows_to_dense(*csr, rows, self._X.shape[1], total)
        return out

    def _iterate(self, split: str):
        if not self._dev:
            self.setup()
        rows_all = self._epoch_rows(split)
        labelled = self._labelled_stream(split) if self.semi_supervised else None
        streaming = self.gather == "torch" and self.chunk_cells is not None
        chunk = self.chunk_cells if streaming else max(len(rows_all), 1)
        for c0 in range(0, len(rows_all), chunk):
            rows_c = rows_all[c0 : c0 + chunk]
            rows_c_d = torch.from_numpy(rows_c).to(self._device)
            csr = base = None
            if self.gather == "torch":
                if streaming:
                    csr = self._to_device(self._X[rows_c])
                    base = torch.arange(len(rows_c), device=self._device)
                else:
                    csr = (self._dev["_indptr"], self._dev["_indices"], self._dev["_data"])
            nnz = self._row_nnz[rows_c]
            for a, b in self._batch_bounds_chunk(c0, len(rows_c), split):
                batch = self._make_batch(
                    rows_c[a:b], rows_c_d[a:b], csr, None if base is None else base[a:b], int(nnz[a:b].sum())
                )
                yield batch if labelled is None else [batch, next(labelled)]

    def _batch_bounds_chunk(self, c0: int, n_chunk: int, split: str):
        """Batch bounds within a chunk, consistent with :meth:`_n_batches` over the whole epoch."""
        n_batches = self._n_batches(split)
        for b in range(n_chunk // self.batch_size + 1):
            g = c0 // self.batch_size + b  # global batch number
            a, e = b * self.batch_size, min(n_chunk, (b + 1) * self.batch_size)
            if g >= n_batches or a >= e:
                return
            yield a, e

    def _labelled_stream(self, split: str):
        """Endless labelled batches cycling reshuffled labelled cells (scvi-tools' ConcatDataLoader)."""
        idx = self.labelled_train_idx if split == "train" else self.labelled_val_idx
        if len(idx) == 0:
            return None
        idx = self._shard(idx, pad=True)

        def gen():
            while True:
                order = idx[self._rng.permutation(len(idx))] if split == "train" else idx
                for a in range(0, len(order), self.batch_size):
                    rows = order[a : a + self.batch_size]
                    if split == "train" and len(rows) < _MIN_LAST_BATCH and len(order) >= _MIN_LAST_BATCH:
                        continue
                    rows_d = torch.from_numpy(rows).to(self._device)
                    csr = local = None
                    if self.gather == "torch" and self.chunk_cells is None:
                        csr = (self._dev["_indptr"], self._dev["_indices"], self._dev["_data"])
                    elif self.gather == "torch":
                        csr, local = (
                            self._to_device(self._X[rows]),
                            torch.arange(len(rows), device=self._device),
                        )
                    yield self._make_batch(rows, rows_d, csr, local, int(self._row_nnz[rows].sum()))

        return gen()
