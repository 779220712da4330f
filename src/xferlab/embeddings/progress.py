"""A progress bar for an extraction: images embedded, images/s and ETA (rank 0 only, and only on a
terminal; see `xferlab.runtime.progress`)."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from xferlab.runtime.progress import bar


class ExtractionProgress(Callback):
    """Counts the rows of every predicted batch `(rows, embeddings)` against the store's size."""

    def __init__(self, n_images: int, what: str):
        self.n_images, self.what = int(n_images), what
        self._bar = None

    def on_predict_start(self, trainer, pl_module):
        if trainer.global_rank == 0:
            self._bar = bar(self.n_images, f"extract {self.what}", unit="img")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._bar is not None:  # other ranks' batches are not counted: the ETA assumes equal ranks
            self._bar.update(len(outputs[0]) * trainer.world_size)

    def on_predict_end(self, trainer, pl_module):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
