"""A TensorBoard event stream per training job, beside its resume checkpoint.

Trackers only watch: they get the curve rows the engine has already made and write beside a job's
outputs, never into them (the code fingerprint leaves them out: :data:`diffusion_lib.settings.provenance.OBSERVERS`).

Every run the engine trains with a resume path writes its learning-curve rows, as they are made,
to ``tb/`` next to ``resume.ckpt``: each loss part, the validation MSE (EMA, and raw when scored),
the learning rate, the gradient norm and clip fraction, the energy gap and saturated-pair share,
the mining acceptance and the step rate (:data:`SCALARS`). The values are the curve row's, which
the engine has already read from the device, so a stream adds no host read. With the budget ladder
a run has one stream per piece: ``trunk/tb`` (the constant-lr trunk, continued by each trunk job),
``rung-<b>/tb`` (each smaller rung's decay branch) and ``tb`` (the full budget's branch).

Resuming: a stream opened at step s hides whatever an earlier attempt wrote beyond s
(TensorBoard's ``purge_step``), so a killed and resumed run has no duplicated steps. Values are
stored in double precision: read back they equal ``curve.csv``. ``python -m diffusion_lib.watch.status
--tensorboard`` prints the ``tensorboard`` command that shows a study's runs named by strategy and seed.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)
_warned = False  # the 'not installed' note is logged once per process


DIR = "tb"


# curve column -> TensorBoard tag
SCALARS = {"loss": "loss/total", "loss_mse": "loss/denoising", "loss_energy": "loss/contrastive",
           "val_mse_ema": "val/mse_ema", "val_mse_raw": "val/mse_raw", "lr": "optim/lr",
           "grad_norm": "optim/grad_norm", "clip_frac": "optim/clip_frac", "energy_gap": "energy/gap",
           "saturated_frac": "energy/saturated_frac", "mine_accept": "mining/acceptance",
           "steps_per_s": "speed/steps_per_s", "val_mse_over_best": "val/mse_over_best"}


def scalars(row: Mapping[str, Any]) -> list[tuple[str, float]]:
    """A curve row's finite values under their tags (:data:`SCALARS`): what every tracker records."""
    return [(tag, float(row[key])) for key, tag in SCALARS.items()
            if row.get(key) is not None and math.isfinite(row[key])]


def stream_dir(resume_path: str | Path | None) -> Path | None:
    """The event stream of the job whose resume checkpoint is ``resume_path`` (None: none)."""
    return None if resume_path is None else Path(resume_path).with_name(DIR)


class TensorBoardStream:
    """One training job's scalars in ``logdir`` (see the module docstring); without the
    ``tensorboard`` package, one warning and nothing written."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.writer: Any = None

    def start(self, step: int) -> None:
        """Open the stream at training step ``step``, hiding events an earlier attempt wrote after it."""
        global _warned
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is an optional extra
            if not _warned:
                log.info("TensorBoard streams are off: %s (pip install -e '.[tracking]')", exc)
                _warned = True
            return
        self.writer = SummaryWriter(str(self.logdir), purge_step=step + 1)

    def log(self, row: Mapping[str, Any]) -> None:
        """One curve row's scalars at its step."""
        if self.writer is None:
            return
        for tag, value in scalars(row):
            self.writer.add_scalar(tag, value, int(row["step"]), new_style=True, double_precision=True)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_stream(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of a stream as TensorBoard shows them: tag -> [(step, value)], read with the event
    reader of tensorboard's data provider (steps an attempt's restart purged are hidden)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(logdir), tensor_size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}
