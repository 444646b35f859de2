"""draw ensemble forecasts from a diffusion checkpoint (PreDiff), with knowledge control

    earthcast sample ckpt_path=<align run>/checkpoints/best.ckpt members=8 sampler=ddim sampler.steps=50 \
        knowledge=avg_intensity knowledge.n_sigma=2

Writes to the run directory
    predictions.nc   members (sample, member, lead_time, y, x) in the stored-forecast schema (VIL 0–255)
    metrics.json     ensemble scores (crps, spread_skill_ratio, csi_m and pooled CSI of the ensemble mean),
                     member/<key> (the same scores of single members), persistence_ensemble/crps (members =
                     the last context frames held), knowledge/<key> (F₀, achieved mean intensity, projection
                     moves), mean_intensity_error against F₀, sampling_seconds (wall time of drawing the
                     ensembles) and network_evaluations
    knowledge.png    per plotted sample (the wettest contexts of the first batch): context row, target row,
                     one row per n in `figure_n_sigma` (members from the same initial noise, so rows differ only
                     by the guidance target); drawn with guidance even for knowledge=none when the checkpoint has
                     an alignment network; the rows are members for an LDM checkpoint
    knowledge.gif    the same rows animated over time
    report.md, plots/ as for `earthcast eval`
The model is rebuilt from the checkpoint alone (architecture and weights); the data come from the composed
config, i.e. the checkpoint run's dataset unless overridden here. Sampling runs in a Lightning test loop on
the device `device` names (or, with device=null, as the trainer config says), in `trainer.precision`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from earthcast.config import plain
from earthcast.data import build_datamodule
from earthcast.diffusion import KnowledgeControl, KnowledgeSettings, build_sampler
from earthcast.errors import UserError
from earthcast.lightning import Checkpoint, build_module, build_trainer
from earthcast.lightning.sampling import EnsembleSampling
from earthcast.lightning.writer import ForecastWriter
from earthcast.metrics.report import print_summary
from earthcast.viz import plot_knowledge_rows, write_rows_gif

log = logging.getLogger("earthcast")
SAMPLING_MODULES = ("prediff_ldm", "prediff_align")


def run(cfg: DictConfig, checkpoint: Checkpoint | None) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    if checkpoint is None:
        raise UserError("earthcast sample needs ckpt_path=<prediff_ldm or prediff_align run>/checkpoints/best.ckpt")
    members = int(cfg.members)
    if members < 1:
        raise UserError(f"members={members}; draw at least 1 member per forecast")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if checkpoint.module not in SAMPLING_MODULES:
        raise UserError(f"ckpt_path={checkpoint.path} is a {checkpoint.module or 'non-earthcast'!r} checkpoint; "
                        f"`earthcast sample` needs a prediff_ldm or prediff_align checkpoint")
    model = build_module(checkpoint.config, checkpoint)
    checkpoint.load_weights(model)
    # settings are checked against the checkpoint before any data is read: mistakes fail fast
    control = KnowledgeControl(KnowledgeSettings.from_config(plain(cfg.knowledge)), model)
    sampler = build_sampler(plain(cfg.sampler), model.schedule, model.prediction_type)
    datamodule = build_datamodule(cfg.dataset, split=str(cfg.split))
    checkpoint.restore_datamodule(datamodule)

    bars = SamplingProgress(sampler)
    sampling = EnsembleSampling(model.eval(), control, sampler, members, plain(cfg.evaluator), int(cfg.seed),
                                cfg.figure_n_sigma, int(cfg.figure_samples), on_step=bars.step,
                                bootstrap=plain(cfg.bootstrap))
    writer = ForecastWriter.for_run(cfg, str(cfg.ckpt_path), sampler=sampler.describe(),
                                    knowledge=control.settings.mode, n_sigma=control.settings.n_sigma)
    trainer = build_trainer(cfg, fit=False, callbacks=[writer, bars], progress_bar=False, inference_mode=False,
                            limit_test_batches=int(cfg.max_batches) if cfg.max_batches is not None else 1.0,
                            **device_settings(cfg.device))
    log.info("sampling %s × %d member(s) with %s, knowledge=%s", "all batches" if cfg.max_batches is None
             else f"{cfg.max_batches} batch(es)", members, sampler.describe(), control.settings.mode)
    trainer.test(sampling, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}
    scores = writer.write_results(cfg, split=str(cfg.split), source=str(cfg.ckpt_path))
    outputs = {"metrics": run_dir / "metrics.json", "predictions": writer.written, "report": run_dir / "report.md"}
    outputs.update(draw_figures(run_dir, writer.results["figures"], cfg.dataset.frame_minutes, bool(cfg.gif)))
    print_summary(f"ensemble scores — {members} members, {sampler.describe()}, knowledge={control.settings.mode}",
                  scores, run_dir, outputs)
    return scores


def device_settings(device: str | None) -> dict:
    """`device` (auto | cpu | cuda | cuda:N) as Trainer arguments: one device, auto a GPU if there is one;
    null leaves the choice to the trainer config (trainer=ddp: every device, each sampling its share)."""
    if device is None:
        return {}
    one = {"devices": 1, "num_nodes": 1, "strategy": "auto"}
    if device in ("auto", "cpu"):
        return {**one, "accelerator": device}
    if device == "cuda" or device.startswith("cuda:"):
        return {**one, "accelerator": "gpu", "devices": [int(device.partition(":")[2] or 0)]}
    raise UserError(f"device={device!r}; use auto, cpu, cuda or cuda:<index>")


def draw_figures(run_dir: Path, figures, frame_minutes, gif: bool) -> dict[str, Path]:
    """knowledge.png (and .gif) per plotted sample: knowledge_<i> after the first."""
    paths: dict[str, Path] = {}
    if figures is None:
        return paths
    context, target, rows, labels = figures
    for i in range(context.shape[0]):
        suffix = f"_{i}" if i else ""
        paths[f"figure{suffix}"] = plot_knowledge_rows(run_dir / f"knowledge{suffix}.png", context[i], target[i],
                                                       rows[i], labels[i], frame_minutes=frame_minutes)
        if gif:
            paths[f"gif{suffix}"] = write_rows_gif(run_dir / f"knowledge{suffix}.gif", context[i], target[i],
                                                   rows[i], labels[i])
    return paths


class SamplingProgress(Callback):
    """Two bars on rank 0: batches, and the denoising steps of the chain being drawn."""

    def __init__(self, sampler):
        self.sampler, self.progress, self.steps = sampler, None, None

    def on_test_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        self.progress = Progress(*columns, console=Console(), transient=False)
        self.progress.start()
        self.batches = self.progress.add_task("batches", total=trainer.num_test_batches[0])
        self.steps = self.progress.add_task(f"{self.sampler.describe()} steps", total=self.sampler.steps)

    def step(self, i: int, n: int) -> None:
        if self.progress is not None:
            self.progress.update(self.steps, completed=i, total=n)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.progress is not None:
            self.progress.advance(self.batches)

    def on_test_end(self, trainer, pl_module) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_test_end(trainer, pl_module)
