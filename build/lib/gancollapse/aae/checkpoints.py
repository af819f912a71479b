"""One checkpoint per level of detail: ``<run>/checkpoints/lod<k>.ckpt``.

ALAE saves ``model_tmp_lod<k>`` at the end of every epoch (``podgorskiy/ALAE:train_alae.py``), so the last one
of each stage survives; this keeps exactly that one: the state at the end of stage k. The stage that is
running when training stops (the top lod at the end of a run, or a lower one when a step limit cuts it short)
is saved at the end of training. Each file is a full Lightning checkpoint (resumable; the module's lod and
blend are in its ``mbrce_aae`` entry).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


def lod_checkpoint_path(run_dir: str | Path, lod: int) -> Path:
    """``<run>/checkpoints/lod<k>.ckpt``."""
    return Path(run_dir) / "checkpoints" / f"lod{int(lod)}.ckpt"


class LodCheckpoint(L.Callback):
    """Saves ``checkpoints/lod<k>.ckpt`` at the last epoch of stage k and at the end of training.

    Works with any module that has ``schedule`` (a :class:`~gancollapse.aae.lod.LodSchedule`) and ``lod``.
    """

    def _save(self, trainer: L.Trainer, lod: int) -> None:
        trainer.save_checkpoint(lod_checkpoint_path(trainer.default_root_dir, lod), weights_only=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule = pl_module.schedule
        epoch = trainer.current_epoch
        lod = schedule.lod_at_epoch(epoch)
        if lod < schedule.max_lod and epoch + 1 == schedule.stage_starts[lod + 1]:
            self._save(trainer, lod)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.g_steps > 0:
            self._save(trainer, pl_module.lod)
