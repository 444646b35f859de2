"""`earthcast sample` as a Lightning test loop: ensembles of a prediff_ldm / prediff_align module drawn under
knowledge control, scored as ensembles, as single members and against a persistence ensemble.

Running inside the Trainer gives sampling the trainer's device, precision and strategy. Every batch draws its
members from noise seeded by (seed + batch index), so a rerun on the same split reproduces them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import lightning as L
import torch

from earthcast.data.base import metadata
from earthcast.diffusion import KnowledgeControl, KnowledgeSettings, Sampler
from earthcast.errors import UserError
from earthcast.lightning.prediff.latent import LatentDiffusionModule
from earthcast.metrics import build_evaluator

#: the knowledge/* running sums, reduced over ranks at the end
SUMS = ("forecast", "observed", "f0", "count", "mean_abs_change", "rms_change", "batches")


def persistence_ensemble(context: torch.Tensor, out_len: int, members: int) -> torch.Tensor:
    """A reference ensemble: member k holds the k-th last context frame constant (B×M'×T×H×W×C)."""
    frames = context[:, -min(members, context.shape[1]):].flip(1)  # most recent first
    return frames.unsqueeze(2).expand(-1, -1, out_len, *context.shape[2:]).contiguous()


class EnsembleSampling(L.LightningModule):
    def __init__(self, model: LatentDiffusionModule, control: KnowledgeControl, sampler: Sampler, members: int,
                 evaluator: dict, seed: int, figure_n_sigma: Sequence[float], figure_samples: int,
                 on_step: Callable[[int, int], None] | None = None, bootstrap: dict | None = None):
        super().__init__()
        self.model, self.control, self.sampler = model, control, sampler
        self.members, self.seed, self.on_step = int(members), int(seed), on_step
        self.figure_n_sigma, self.figure_samples = [float(n) for n in figure_n_sigma], int(figure_samples)
        self.out_len = int(model.config["dataset"]["out_len"])
        self.ensemble_evaluator = build_evaluator(evaluator, bootstrap=bootstrap)
        self.member_evaluator = build_evaluator({**evaluator, "reference": False})
        self.persistence_evaluator = build_evaluator({**evaluator, "reference": False})
        self.sums = dict.fromkeys(SUMS, 0.0)
        self.max_violation = 0.0
        self.sampling_seconds = 0.0
        self.first_batch: tuple[torch.Tensor, ...] | None = None

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        inputs, targets = batch["inputs"], batch["targets"]
        units, settings = self.trainer.datamodule.units, self.control.settings
        started = time.perf_counter()
        forecast, f0, moved = self.control.sample(self.model.pipeline(), inputs, self.members, self.sampler,
                                                  self.out_len, seed=self.seed + batch_idx, n_sigma=settings.n_sigma,
                                                  units=units, on_step=self.on_step)
        self.sampling_seconds += time.perf_counter() - started
        meta = metadata(batch)
        phys = {"forecast": units(forecast), "target": units(targets), "context": units(inputs)}
        if f0 is not None and self.model.constraint.name == "avg_intensity":
            meta[self.ensemble_evaluator.intensity_target_key] = units(f0.mean(dim=1)).cpu()
        self.ensemble_evaluator.update(phys["forecast"], phys["target"], context=phys["context"], meta=meta)
        member_meta = {k: [v for v in meta[k] for _ in range(self.members)] for k in ("event_type",) if k in meta}
        self.member_evaluator.update(phys["forecast"].flatten(0, 1),
                                     phys["target"].repeat_interleave(self.members, 0), meta=member_meta)
        self.persistence_evaluator.update(persistence_ensemble(phys["context"], self.out_len, self.members),
                                          phys["target"], meta=meta)
        sums = self.sums
        sums["forecast"] += float(phys["forecast"].mean(dim=(1, 2, 3, 4, 5)).sum())
        sums["observed"] += float(phys["target"].mean(dim=(1, 2, 3, 4)).sum())
        if f0 is not None:
            sums["f0"] += float(units(f0.mean(dim=1)).sum())
        sums["count"] += inputs.shape[0]
        if moved is not None:
            for key in ("mean_abs_change", "rms_change"):
                sums[key] += units.difference(moved[key])
            self.max_violation = max(self.max_violation, units.difference(moved["max_violation"]))
            sums["batches"] += 1
        if self.first_batch is None:
            self.first_batch = (inputs, targets, forecast)
        return {"prediction": phys["forecast"], "target": phys["target"], "context": phys["context"], "meta": meta}

    def _reduced_sums(self) -> dict[str, float]:
        if self.trainer.world_size == 1:
            return dict(self.sums)
        total = self.trainer.strategy.reduce(torch.tensor([self.sums[k] for k in SUMS], dtype=torch.float64,
                                                          device=self.device), reduce_op="sum")
        self.max_violation = float(self.trainer.strategy.reduce(
            torch.tensor(self.max_violation, dtype=torch.float64, device=self.device), reduce_op="max"))
        return dict(zip(SUMS, total.tolist()))

    def test_results(self) -> dict:
        """Ensemble scores, member/<key>, persistence_ensemble/crps, the sampling cost and knowledge/<key>, plus
        the rows of the knowledge figure (rank 0)."""
        sums = self._reduced_sums()
        if sums["count"] == 0:
            raise UserError("the split gave no batches to sample; check dataset.splits and max_batches")
        results = self.ensemble_evaluator.results()
        scores = dict(results["scores"])
        for key, value in self.member_evaluator.compute().items():
            if key.startswith(("csi", "mse", "mae", "crps", "fss")):
                scores[f"member/{key}"] = value
        scores["persistence_ensemble/crps"] = self.persistence_evaluator.compute().get("crps")
        settings, count = self.control.settings, sums["count"]
        # wall time of drawing the ensembles (encode, denoise, guide, decode, project), not of scoring or figures
        scores.update({"sampling_seconds": self.sampling_seconds, "sampling_threads": torch.get_num_threads(),
                       "network_evaluations": self.sampler.steps * int(count) * self.members})
        scores.update({"members": self.members, "sampler": self.sampler.describe(), "knowledge/mode": settings.mode,
                       "knowledge/n_sigma": float(settings.n_sigma), "knowledge/scale": float(settings.scale),
                       "knowledge/forecast_mean_intensity": sums["forecast"] / count,
                       "knowledge/observed_mean_intensity": sums["observed"] / count})
        if self.control.active:
            scores["knowledge/f0_mean_intensity"] = sums["f0"] / count
        if sums["batches"]:
            scores.update({f"knowledge/projection_{k}": sums[k] / sums["batches"]
                           for k in ("mean_abs_change", "rms_change")})
            scores["knowledge/projection_max_violation"] = self.max_violation
        results["scores"] = scores
        results["figures"] = self.figure_rows() if self.trainer.is_global_zero else None
        return results

    def figure_rows(self):
        """(context, target, rows, labels per sample) in physical units for `figure_samples` samples of the first
        batch: those with the wettest contexts (a dry scene shows little), chosen without looking at the targets."""
        if self.first_batch is None or self.figure_samples <= 0:
            return None  # figure_samples=0: no figure (its rows are extra chains, long with 1000 DDPM steps)
        units = self.trainer.datamodule.units
        inputs, targets, forecast = self.first_batch
        chosen = inputs.flatten(1).mean(dim=1).argsort(descending=True)[:min(self.figure_samples, inputs.shape[0])]
        inputs, targets, forecast = inputs[chosen], targets[chosen], forecast[chosen]
        k, control = inputs.shape[0], self.control
        if not control.active and hasattr(self.model, "align_net"):
            # the figure is about knowledge control: with knowledge=none an alignment checkpoint still shows the
            # guided rows (soft guidance at the configured scale); the scores stay unguided
            settings = KnowledgeSettings(mode="guide", constraint=self.model.constraint.name,
                                         scale=control.settings.scale)
            control = KnowledgeControl(settings, self.model)
        if not control.active:  # an LDM checkpoint: no alignment network, show members instead
            shown = forecast[:, : len(self.figure_n_sigma)]
            labels = [f"member {i + 1}" for i in range(shown.shape[1])]
            return units(inputs), units(targets), units(shown), [labels] * k
        rows, labels = [], [[] for _ in range(k)]  # labels per plotted sample: each has its own F₀
        with self.trainer.precision_plugin.test_step_context():
            for n in self.figure_n_sigma:
                # the same seed for every n: rows differ only by the anticipated value they are steered to
                forecast_n, f0, _ = control.sample(self.model.pipeline(), inputs, 1, self.sampler, self.out_len,
                                                   seed=self.seed, n_sigma=n, units=units, on_step=self.on_step)
                rows.append(forecast_n[:, 0])
                for i in range(k):
                    wanted, achieved = units(float(f0[i].mean())), units(float(forecast_n[i].mean()))
                    labels[i].append(f"n = {n:+g}\nF₀ {wanted:.1f}, got {achieved:.1f}")
        return units(inputs), units(targets), units(torch.stack(rows, dim=1)), labels
