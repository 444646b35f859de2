"""published Earthformer weights (weights=<.pt>) → an earthcast checkpoint for eval/predict/init_from

The checkpoint holds the converted weights under the forecasting task, the run config a training run of the
same model and dataset would have (the published recipe when one exists), and the overrides that rebuild it,
so `eval`, `predict` and `train init_from=` take it like any trained run's checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from earthcast import __version__
from earthcast.errors import UserError
from earthcast.io import AtomicFile
from earthcast.lightning import Checkpoint, build_module
from earthcast.models.earthformer.convert import convert_for, describe, read_weights

# model and dataset of each published configuration → the preset with its published recipe
PUBLISHED_PRESETS = {
    ("earthformer_sevir", "sevir"): "sevir_earthformer",
    ("earthformer_sevirlr", "sevirlr"): "sevirlr_earthformer",
    ("earthformer_enso", "enso"): "enso_earthformer",
}
_OWN_KEYS = ("weights", "dst")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_overrides() -> list[str]:
    """The overrides that rebuild the converted model: the published preset of the model/dataset pair (if
    any and none was given), the evaluator that belongs to the dataset, then the user's own overrides."""
    hydra_cfg = HydraConfig.get()
    given = [o for o in hydra_cfg.overrides.task
             if _key(o) not in _OWN_KEYS and not _key(o).startswith(("hydra.", "hydra/"))]
    keys = {_key(o) for o in given}
    choices = hydra_cfg.runtime.choices
    model, dataset = choices.get("model"), choices.get("dataset")
    preset = PUBLISHED_PRESETS.get((model, dataset))
    implied = []
    if preset and "experiment" not in keys:
        implied.append(f"experiment={preset}")
    if "evaluator" not in keys and not preset:
        implied.append(f"evaluator={str(dataset).removesuffix('_synth')}")
    return implied + given


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(cfg: DictConfig, checkpoint: Checkpoint | None = None) -> Path:
    weights = Path(str(cfg.weights))
    state_dict = read_weights(weights)
    overrides = run_overrides()
    try:
        run_cfg = compose(config_name="train", overrides=overrides)
    except Exception as err:  # noqa: BLE001 - composition errors are configuration mistakes
        raise UserError(f"cannot compose the run for {' '.join(overrides)}: {str(err).splitlines()[0]}") from None
    if run_cfg.model.name != "earthformer" or run_cfg.module != "forecast":
        raise UserError(f"convert turns published Earthformer weights into model=earthformer_* checkpoints; "
                        f"model={HydraConfig.get().runtime.choices.get('model')} is not an Earthformer")
    module = build_module(run_cfg)
    target = " ".join(o for o in overrides if _key(o) in ("model", "dataset", "experiment"))
    converted = convert_for(module.model, state_dict, source=str(weights), target=target,
                            cross_start=int(run_cfg.model.dec_cross_start))
    module.model.load_state_dict(converted, strict=True)

    dst = Path(str(cfg.dst)) if cfg.dst else Path(cfg.paths.output_dir) / "checkpoints" / f"{weights.stem}.ckpt"
    content = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": {"config": module.config},
        "earthcast": {"overrides": overrides, "version": __version__,
                      "converted_from": {"file": weights.name, "sha256": _sha256(weights)}},
    }
    with AtomicFile(dst) as tmp:
        torch.save(content, tmp)
    print(f"converted {weights} ({describe(state_dict)})\n  → {dst}\n"
          f"  next: earthcast eval ckpt_path={dst}   (add paths.data_root=<your data> and trainer=gpu as needed)")
    return dst
