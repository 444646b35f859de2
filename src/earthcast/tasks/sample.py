"""`earthcast sample ckpt_path=<prediff_ldm or prediff_align ckpt>`: ensemble forecasts with knowledge control.

    earthcast sample ckpt_path=<align run>/checkpoints/best.ckpt members=8 sampler=ddim sampler.steps=50 \
        knowledge=avg_intensity knowledge.n_sigma=2

Writes to the run directory
    predictions.nc   members (sample, member, lead_time, y, x) in the stored-forecast schema (VIL 0–255)
    metrics.json     ensemble scores (crps, spread_skill, csi_m and pooled CSI of the ensemble mean),
                     member/<key> (the same scores of single members), persistence_ensemble/crps (members =
                     the last context frames held), knowledge/<key> (F₀, achieved mean intensity, projection
                     moves), mean_intensity_error against F₀, sampling_seconds (wall time of drawing the
                     ensembles) and network_evaluations
    knowledge.png    per plotted sample (the wettest contexts of the first batch): context row, target row,
                     one row per n in `figure_n_sigma`
                     (members from the same initial noise, so rows differ only by the guidance target);
                     drawn with guidance even for knowledge=none when the checkpoint has an alignment
                     network; the rows are members for an LDM checkpoint
    knowledge.gif    the same rows animated over time
    report.md, plots/ as for `earthcast eval`
The model is rebuilt from the checkpoint alone (architecture and weights); the data come from the composed
config, i.e. the checkpoint run's dataset unless overridden here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from earthcast.data import build_datamodule
from earthcast.data.predictions import PredictionWriter
from earthcast.diffusion import KnowledgeGuidance, KnowledgeSettings, build_sampler, project_members
from earthcast.errors import UserError
from earthcast.metrics import build_evaluator
from earthcast.tasks.allocator import keep_freed_memory
from earthcast.tasks.base import TASK_MODULES
from earthcast.tasks.commands import _split_loader, console, print_summary, write_evaluation
from earthcast.tasks.forecast import batch_metadata, evaluator_results
from earthcast.tasks.runtime import load_checkpoint, restore_datamodule_state, restore_weights

log = logging.getLogger("earthcast")
SAMPLING_MODULES = ("prediff_ldm", "prediff_align")


def load_sampling_task(path: str):
    """The prediff_ldm / prediff_align task stored in a checkpoint, weights loaded, in eval mode."""
    import earthcast.tasks.prediff  # noqa: F401 - registers the task classes

    checkpoint = load_checkpoint(path)
    stored = (checkpoint.get("hyper_parameters") or {}).get("config") or {}
    module = stored.get("module")
    if module not in SAMPLING_MODULES:
        raise UserError(f"ckpt_path={path} is a {module or 'non-earthcast'!r} checkpoint; `earthcast sample` needs "
                        f"a prediff_ldm or prediff_align checkpoint")
    task = TASK_MODULES.get(module)(stored, load_parents=False)
    restore_weights(task, checkpoint, path)
    return task.eval(), checkpoint


def _device(cfg: DictConfig) -> torch.device:
    wanted = str(cfg.get("device") or "auto")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


class KnowledgeRunner:
    """F₀ per sample and the guidance / projection of one batch, from `knowledge` settings + the task."""

    def __init__(self, task, settings: KnowledgeSettings, to_physical_unit: float):
        self.task, self.settings, self.unit = task, settings, to_physical_unit
        if settings.mode == "none":
            return
        if not hasattr(task, "align_net"):
            raise UserError(f"knowledge.mode={settings.mode} needs a prediff_align checkpoint (it holds the "
                            f"alignment network and the F₀ regression); use knowledge=none with an LDM checkpoint")
        if settings.constraint and settings.constraint != task.constraint.name:
            raise UserError(f"knowledge.constraint={settings.constraint} but the alignment checkpoint was trained "
                            f"for {task.constraint.name!r}; use knowledge={task.constraint.name}")

    @property
    def active(self) -> bool:
        return self.settings.mode != "none"

    def target(self, inputs: torch.Tensor, n_sigma: float) -> torch.Tensor:
        """F₀ (B×K, dataset scale) — from the context regression, or the configured value — clipped to the
        values the statistic can take (τ − 4σ of a dry scene would ask for a negative mean intensity)."""
        if self.settings.target == "value":
            k = self.task.anticipation.coef.shape[1]
            f0 = torch.full((inputs.shape[0], k), float(self.settings.value) / self.unit, dtype=torch.float64,
                            device=inputs.device)
        else:
            f0 = self.task.anticipation.anticipate(self.task.constraint.context_features(inputs), n_sigma)
        bounds = self.task.constraint.statistic_range()
        return f0 if bounds is None else f0.clamp(*bounds)

    def guidance(self, f0: torch.Tensor, members: int):
        if not self.settings.guides or self.settings.scale == 0:
            return None
        task, target = self.task, f0.repeat_interleave(members, dim=0)

        def build(context_latents):
            return KnowledgeGuidance(lambda z, t: task.predict_statistic(z, t, context_latents), target,
                                     task.anticipation.residual_std, self.settings.scale)

        return build

    def project(self, members: torch.Tensor, f0: torch.Tensor):
        if not self.settings.projects:
            return members, None
        return project_members(self.task.constraint, members, f0, self.settings.variance_floor)


def _ensemble_sample(task, runner: KnowledgeRunner, inputs, members, sampler, out_len, seed, n_sigma, on_step):
    """(members B×M×T×H×W×C, F₀ or None, projection stats or None) for one batch."""
    f0 = runner.target(inputs, n_sigma) if runner.active else None
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    guidance = runner.guidance(f0, members) if f0 is not None else None
    forecast, _ = task.pipeline().forecast(inputs, members, sampler, out_len, generator=generator,
                                           guidance=guidance, on_step=on_step)
    moved = None
    if f0 is not None:
        forecast, moved = runner.project(forecast, f0)
    return forecast, f0, moved


def run_sample(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    if not cfg.get("ckpt_path"):
        raise UserError("earthcast sample needs ckpt_path=<prediff_ldm or prediff_align run>/checkpoints/best.ckpt")
    members = int(cfg.members)
    if members < 1:
        raise UserError(f"members={members}; draw at least 1 member per forecast")
    torch.manual_seed(int(cfg.seed))
    task, checkpoint = load_sampling_task(str(cfg.ckpt_path))
    # settings are checked against the checkpoint before any data is read: mistakes fail fast
    settings = KnowledgeSettings.from_config(OmegaConf.to_container(cfg.knowledge, resolve=True))
    runner = KnowledgeRunner(task, settings, 1.0)
    sampler = build_sampler(OmegaConf.to_container(cfg.sampler, resolve=True), task.schedule, task.prediction_type)
    device = _device(cfg)
    if device.type == "cpu" and cfg.get("cpu_keep_freed_memory", False):
        keep_freed_memory()  # as for CPU training: hundreds of sampler steps reuse the same large buffers
    task.to(device)
    datamodule = build_datamodule(cfg.dataset)
    restore_datamodule_state(datamodule, checkpoint)
    unit = float(datamodule.to_physical(torch.ones(())))
    runner.unit = unit
    out_len = int(task.config["dataset"]["out_len"])
    loader = _split_loader(datamodule, str(cfg.split))
    max_batches = cfg.get("max_batches")
    n_batches = len(loader) if max_batches is None else min(len(loader), int(max_batches))

    evaluator_cfg = OmegaConf.to_container(cfg.evaluator, resolve=True)
    ensemble_ev = build_evaluator(evaluator_cfg)
    member_ev = build_evaluator({**evaluator_cfg, "reference": False})
    persistence_ev = build_evaluator({**evaluator_cfg, "reference": False})
    writer = PredictionWriter(run_dir / "predictions.nc", dataset=str(cfg.dataset.name), members=True,
                              max_samples=cfg.outputs.get("max_prediction_samples"),
                              attrs={"model": str(task.config["model"]["name"]), "source": str(cfg.ckpt_path),
                                     "sampler": sampler.describe(), "knowledge": settings.mode,
                                     "n_sigma": settings.n_sigma, "frame_minutes": cfg.dataset.get("frame_minutes") or ""})
    intensity = {"forecast": 0.0, "observed": 0.0, "f0": 0.0, "count": 0}
    projection = {"mean_abs_change": 0.0, "rms_change": 0.0, "max_violation": 0.0, "batches": 0}
    figure_batch = None
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    log.info("sampling %d batch(es) × %d member(s) with %s, knowledge=%s", n_batches, members,
             sampler.describe(), settings.mode)
    sampling_seconds = 0.0
    try:
        with Progress(*columns, console=console, transient=False) as progress, torch.no_grad():
            batch_bar = progress.add_task("batches", total=n_batches)
            step_bar = progress.add_task(f"{sampler.describe()} steps", total=sampler.steps)

            def on_step(i, n):
                progress.update(step_bar, completed=i, total=n)

            for index, batch in enumerate(loader):
                if index >= n_batches:
                    break
                inputs, targets = batch["inputs"].to(device), batch["targets"].to(device)
                started = time.perf_counter()
                forecast, f0, moved = _ensemble_sample(task, runner, inputs, members, sampler, out_len,
                                                       int(cfg.seed) + index, settings.n_sigma, on_step)
                sampling_seconds += time.perf_counter() - started
                meta = batch_metadata(batch)
                phys = {"forecast": forecast * unit, "target": targets * unit, "context": inputs * unit}
                if f0 is not None and task.constraint.name == "avg_intensity":
                    meta[ensemble_ev.intensity_target_key] = (f0.mean(dim=1) * unit).cpu()
                ensemble_ev.update(phys["forecast"], phys["target"], context=phys["context"], meta=meta)
                member_meta = {k: [v for v in meta[k] for _ in range(members)] for k in ("event_type",) if k in meta}
                member_ev.update(phys["forecast"].flatten(0, 1), phys["target"].repeat_interleave(members, 0),
                                 meta=member_meta)
                persistence_ev.update(_persistence_ensemble(phys["context"], out_len, members), phys["target"], meta=meta)
                writer.write(phys["forecast"], phys["target"], phys["context"], meta)
                intensity["forecast"] += float(phys["forecast"].mean(dim=(1, 2, 3, 4, 5)).sum())
                intensity["observed"] += float(phys["target"].mean(dim=(1, 2, 3, 4)).sum())
                if f0 is not None:
                    intensity["f0"] += float((f0.mean(dim=1) * unit).sum())
                intensity["count"] += inputs.shape[0]
                if moved is not None:
                    for key in ("mean_abs_change", "rms_change"):
                        projection[key] += moved[key] * unit
                    projection["max_violation"] = max(projection["max_violation"], moved["max_violation"] * unit)
                    projection["batches"] += 1
                if figure_batch is None:
                    figure_batch = (inputs, targets, forecast)
                progress.advance(batch_bar)
            figure_rows = _figure_rows(cfg, task, runner, sampler, out_len, figure_batch, members, unit,
                                       on_step) if figure_batch is not None else None
    except BaseException:
        writer.abort()
        raise
    predictions = writer.close()
    if intensity["count"] == 0:
        raise UserError(f"split={cfg.split} gave no batches to sample; check dataset.splits and max_batches")

    results = evaluator_results(ensemble_ev)
    scores = dict(results["scores"])
    for key, value in member_ev.compute().items():
        if key.startswith(("csi", "mse", "mae", "crps", "fss")):
            scores[f"member/{key}"] = value
    scores["persistence_ensemble/crps"] = persistence_ev.compute().get("crps")
    count = intensity["count"]
    # wall time of drawing the ensembles (encode, denoise, guide, decode, project), not of scoring or figures
    scores.update({"sampling_seconds": sampling_seconds, "sampling_threads": torch.get_num_threads(),
                   "network_evaluations": sampler.steps * intensity["count"] * members})
    scores.update({"members": members, "sampler": sampler.describe(), "knowledge/mode": settings.mode,
                   "knowledge/n_sigma": float(settings.n_sigma), "knowledge/scale": float(settings.scale),
                   "knowledge/forecast_mean_intensity": intensity["forecast"] / count,
                   "knowledge/observed_mean_intensity": intensity["observed"] / count})
    if runner.active:
        scores["knowledge/f0_mean_intensity"] = intensity["f0"] / count
    if projection["batches"]:
        scores.update({f"knowledge/projection_{k}": projection[k] / projection["batches"]
                       for k in ("mean_abs_change", "rms_change")})
        scores["knowledge/projection_max_violation"] = projection["max_violation"]
    results["scores"] = scores
    out = write_evaluation(cfg, run_dir, results, split=str(cfg.split), predictions=predictions,
                           source=str(cfg.ckpt_path))
    paths = {"metrics": run_dir / "metrics.json", "predictions": predictions, "report": run_dir / "report.md"}
    if figure_rows is not None:
        context, target, rows, labels = figure_rows
        for i in range(context.shape[0]):
            suffix = f"_{i}" if i else ""
            paths[f"figure{suffix}"] = plot_knowledge_figure(
                run_dir / f"knowledge{suffix}.png", context[i], target[i], rows[i], labels[i],
                frame_minutes=cfg.dataset.get("frame_minutes"))
            if cfg.get("gif", True):
                paths[f"gif{suffix}"] = write_knowledge_gif(run_dir / f"knowledge{suffix}.gif", context[i],
                                                            target[i], rows[i], labels[i])
    print_summary(f"ensemble scores — {members} members, {sampler.describe()}, knowledge={settings.mode}", out,
                  run_dir, paths)
    return out


def _persistence_ensemble(context: torch.Tensor, out_len: int, members: int) -> torch.Tensor:
    """A reference ensemble: member k holds the k-th last context frame constant (B×M'×T×H×W×C)."""
    frames = context[:, -min(members, context.shape[1]):].flip(1)  # most recent first
    return frames.unsqueeze(2).expand(-1, -1, out_len, *context.shape[2:]).contiguous()


def _figure_rows(cfg, task, runner: KnowledgeRunner, sampler, out_len, batch, members, unit, on_step):
    """(context, target, rows, labels per sample) in physical units for `figure_samples` samples of the first
    batch: those with the wettest contexts (a dry scene shows little), chosen without looking at the targets."""
    inputs, targets, forecast = batch
    k = min(int(cfg.get("figure_samples", 1)), inputs.shape[0])
    if k <= 0:  # figure_samples=0: no figure (its rows are extra chains, long with 1000 DDPM steps)
        return None
    chosen = inputs.flatten(1).mean(dim=1).argsort(descending=True)[:k]
    inputs, targets, forecast = inputs[chosen], targets[chosen], forecast[chosen]
    if not runner.active and hasattr(task, "align_net"):
        # the figure is about knowledge control: with knowledge=none an alignment checkpoint still shows the
        # guided rows (soft guidance at the configured scale); the scores above stay unguided
        settings = KnowledgeSettings(mode="guide", constraint=task.constraint.name, scale=runner.settings.scale)
        runner = KnowledgeRunner(task, settings, unit)
    if not runner.active:  # an LDM checkpoint: no alignment network, show members instead
        shown = forecast[:, : len(cfg.figure_n_sigma)]
        labels = [f"member {i + 1}" for i in range(shown.shape[1])]
        return inputs * unit, targets * unit, shown * unit, [labels] * k
    rows, labels = [], [[] for _ in range(k)]  # labels per plotted sample: each has its own F₀
    for n in cfg.figure_n_sigma:
        # the same seed for every n: rows differ only by the anticipated value they are steered to
        forecast_n, f0, _ = _ensemble_sample(task, runner, inputs, 1, sampler, out_len, int(cfg.seed), float(n),
                                             on_step)
        rows.append(forecast_n[:, 0])
        for i in range(k):
            wanted, achieved = float(f0[i].mean()) * unit, float(forecast_n[i].mean()) * unit
            labels[i].append(f"n = {float(n):+g}\nF₀ {wanted:.1f}, got {achieved:.1f}")
    return inputs * unit, targets * unit, torch.stack(rows, dim=1) * unit, labels


# ----------------------------------------------------------------------------------------------- figures
def _frames(x: torch.Tensor):
    x = x.detach().float().cpu()
    return (x[..., 0] if x.shape[-1] == 1 else x).numpy()


def plot_knowledge_figure(path: Path, context, target, rows, labels, frame_minutes=None) -> Path:
    """PreDiff-style figure of one sample: context row, target row, one row per forecast (T×H×W×1 each)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from earthcast.viz import vil_cmap

    cmap, norm = vil_cmap()
    context, target, rows = _frames(context), _frames(target), _frames(rows)
    named = [("context", context, True), ("target", target, False)]
    named += [(label, row, False) for label, row in zip(labels, rows)]
    columns = max(context.shape[0], target.shape[0])
    fig = Figure(figsize=(1.3 * columns + 1.2, 1.35 * len(named) + 0.3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(named), columns, squeeze=False)
    image = None
    for r, (label, frames, is_context) in enumerate(named):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= frames.shape[0]:
                ax.axis("off")
                continue
            image = ax.imshow(frames[c], cmap=cmap, norm=norm)
            if r in (0, 1) and frame_minutes:
                offset = (c - frames.shape[0] + 1) * frame_minutes if is_context else (c + 1) * frame_minutes
                ax.set_title(f"{offset:+.0f} min", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="VIL (0–255)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_knowledge_gif(path: Path, context, target, rows, labels, fps: float = 2.0) -> Path:
    """Animation of the figure's rows side by side: context frames, then target vs each forecast."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.figure import Figure

    from earthcast.viz import vil_cmap

    cmap, norm = vil_cmap()
    context, target, rows = _frames(context), _frames(target), _frames(rows)
    panels = [("target", target)] + list(zip(labels, rows))
    fig = Figure(figsize=(1.8 * len(panels), 2.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    images = []
    for ax, (label, _) in zip(axes, panels):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=6)
        images.append(ax.imshow(context[0], cmap=cmap, norm=norm))
    title = fig.suptitle("", fontsize=8)
    n_context = context.shape[0]

    def draw(frame: int):
        for image, (_, frames) in zip(images, panels):
            image.set_data(context[frame] if frame < n_context else frames[frame - n_context])
        title.set_text("context" if frame < n_context else f"forecast lead {frame - n_context + 1}")
        return images

    animation = FuncAnimation(fig, draw, frames=n_context + target.shape[0], blit=False)
    animation.save(str(path), writer=PillowWriter(fps=fps))
    return path
