"""Lightning callbacks that earthcast adds to the library's own."""

from __future__ import annotations

from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMAWeights(EMAWeightAveraging):
    """Exponential moving average of the weights, used for validation, checkpoints and every later evaluation.

    Lightning's callback stores the averaged weights as the checkpoint's `state_dict` (the raw weights go to
    `current_model_state`, for resuming). Its loading hook restores the raw weights whenever it still holds an
    average, which includes `trainer.test(ckpt_path=...)` right after `fit`: the test would then score the raw
    weights. Outside fitting we keep what `state_dict` loaded, the average, so `train`'s test scores the
    weights that validation selected; `eval` and `predict` build their trainer without this callback and load
    the same `state_dict`.
    """

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
