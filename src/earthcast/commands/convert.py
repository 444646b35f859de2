"""published weights (Earthformer, PreDiff) → an earthcast checkpoint for eval, predict, sample, init_from

    earthcast convert weights=<.pt> model=earthformer_sevir dataset=sevir
    earthcast convert model=prediff_align_sevirlr vae=<.pt> denoiser=<.pt> align=<.pt>

Earthformer: one file, the model and dataset it was trained for. PreDiff: the released file of every network of
the stage (model=prediff_vae_*: vae=; prediff_ldm_*: vae= denoiser=; prediff_align_*: all three), the stage
built as `experiment=<model>` trains it, with the widths the files hold; an alignment stage also fits its F₀
regression on the training split of the dataset (the data must be there; model.anticipation.max_batches=<n>
fits on fewer batches). The checkpoint holds the converted weights, the run config a training run of the same
model and dataset would have (the published recipe when one exists), and the overrides that rebuild it, so
`eval`, `predict`, `sample` and `train init_from=` take it like any trained run's checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from earthcast import __version__
from earthcast.config import plain
from earthcast.data import build_datamodule
from earthcast.errors import UserError
from earthcast.io import AtomicFile
from earthcast.lightning import Checkpoint, build_module
from earthcast.lightning.prediff.released import FILES, STAGES, ReleasedFiles, released_stage
from earthcast.models import weights
from earthcast.models.earthformer.convert import convert_for, describe, read_weights
from earthcast.models.prediff.convert import KINDS, architecture
from earthcast.models.prediff.convert import describe as describe_prediff

# model and dataset of each published configuration → the preset with its published recipe
PUBLISHED_PRESETS = {
    ("earthformer_sevir", "sevir"): "sevir_earthformer",
    ("earthformer_sevirlr", "sevirlr"): "sevirlr_earthformer",
    ("earthformer_enso", "enso"): "enso_earthformer",
}
PREDIFF_FILES = tuple(KINDS)  # vae, denoiser, align: the keys naming the released PreDiff files
_OWN_KEYS = ("weights", "dst", *PREDIFF_FILES)
# where the widths a released file holds go in its stage's config
WIDTHS = {"vae": {"channels": "model.autoencoder.channels", "latent_channels": "model.autoencoder.latent_channels"},
          "denoiser": {"base_units": "model.denoiser.base_units"}, "align": {"base_units": "model.network.base_units"}}


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def given_overrides() -> list[str]:
    """The user's overrides of the run (not convert's own keys, not Hydra's)."""
    return [o for o in HydraConfig.get().overrides.task
            if _key(o) not in _OWN_KEYS and not _key(o).startswith(("hydra.", "hydra/"))]


def run_overrides() -> list[str]:
    """The overrides that rebuild the converted Earthformer: the published preset of the model/dataset pair (if
    any and none was given), the evaluator that belongs to the dataset, then the user's own overrides."""
    given = given_overrides()
    keys = {_key(o) for o in given}
    choices = HydraConfig.get().runtime.choices
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


def _compose(overrides: list[str]) -> DictConfig:
    try:
        return compose(config_name="train", overrides=overrides)
    except Exception as err:  # noqa: BLE001 - composition errors are configuration mistakes
        raise UserError(f"cannot compose the run for {' '.join(overrides)}: {str(err).splitlines()[0]}") from None


def _write(cfg: DictConfig, module, overrides: list[str], converted_from: dict, stem: str) -> Path:
    dst = Path(str(cfg.dst)) if cfg.dst else Path(cfg.paths.output_dir) / "checkpoints" / f"{stem}.ckpt"
    content = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": {"config": module.config},
        "earthcast": {"overrides": overrides, "version": __version__, "converted_from": converted_from},
    }
    with AtomicFile(dst) as tmp:
        torch.save(content, tmp)
    return dst


def run(cfg: DictConfig, checkpoint: Checkpoint | None = None) -> Path:
    model = str(HydraConfig.get().runtime.choices.get("model"))
    given = {key: cfg.get(key) for key in ("weights", *PREDIFF_FILES) if cfg.get(key)}
    files = files_to_convert(model, given)
    return run_prediff(cfg, model, files) if model.startswith("prediff_") else run_earthformer(cfg)


def files_to_convert(model: str, given: dict[str, str]) -> dict[str, Path]:
    """The files `model` is converted from ({key: path}), checked against what was `given` (weights=, vae=, ...)."""
    if not model.startswith("prediff_"):
        prediff = [key for key in PREDIFF_FILES if key in given]
        if prediff:
            raise UserError(f"{prediff[0]}= names a released PreDiff file; pass model=prediff_<stage>_sevirlr with "
                            f"it (model={model} converts one file: weights=<.pt>)")
        if "weights" not in given:
            raise UserError(f"model={model} converts one published file: pass weights=<.pt> (see docs/pretrained.md)")
        return {"weights": Path(given["weights"])}
    needed = FILES[STAGES[len(_stage_names(model)) - 1]]
    wanted = " ".join(f"{kind}=<.pt>" for kind in needed)
    if "weights" in given:
        raise UserError(f"model={model} converts the released PreDiff files one per network: pass {wanted} "
                        f"instead of weights=")
    missing = [kind for kind in needed if kind not in given]
    extra = [kind for kind in PREDIFF_FILES if kind in given and kind not in needed]
    if missing or extra:
        problem = f"missing {' '.join(k + '=' for k in missing)}" if missing else \
            f"{' '.join(k + '=' for k in extra)} belongs to a later stage"
        raise UserError(f"model={model} is made of the released {', '.join(needed)} files: pass {wanted} "
                        f"({problem})")
    return {kind: Path(given[kind]) for kind in needed}


def run_earthformer(cfg: DictConfig) -> Path:
    weights_path = Path(str(cfg.weights))
    state_dict = read_weights(weights_path)
    overrides = run_overrides()
    run_cfg = _compose(overrides)
    if run_cfg.model.name != "earthformer" or run_cfg.module != "forecast":
        raise UserError(f"convert turns published Earthformer weights into model=earthformer_* checkpoints; "
                        f"model={HydraConfig.get().runtime.choices.get('model')} is not an Earthformer")
    module = build_module(run_cfg)
    target = " ".join(o for o in overrides if _key(o) in ("model", "dataset", "experiment"))
    converted = convert_for(module.model, state_dict, source=str(weights_path), target=target,
                            cross_start=int(run_cfg.model.dec_cross_start))
    module.model.load_state_dict(converted, strict=True)
    dst = _write(cfg, module, overrides, {"file": weights_path.name, "sha256": _sha256(weights_path)},
                 weights_path.stem)
    print(f"converted {weights_path} ({describe(state_dict)})\n  → {dst}\n"
          f"  next: earthcast eval ckpt_path={dst}   (add paths.data_root=<your data> and trainer=gpu as needed)")
    return dst


def _stage_names(model: str) -> list[str]:
    """model=prediff_align_sevirlr → its chain's models: prediff_vae_sevirlr, prediff_ldm_sevirlr, prediff_align_sevirlr."""
    for depth, stage in enumerate(STAGES):
        if model.startswith(stage):
            suffix = model[len(stage):]
            return [f"{parent}{suffix}" for parent in STAGES[:depth + 1]]
    raise UserError(f"model={model} is not a PreDiff stage; use model=prediff_vae_*, prediff_ldm_* or prediff_align_*")


def _width_overrides(kind: str, state_dict: dict, preset: DictConfig) -> list[str]:
    """Overrides setting the widths `state_dict` holds where they differ from the stage's preset."""
    sizes = architecture(state_dict, kind) or {}
    overrides = []
    for size, key in WIDTHS[kind].items():
        if size in sizes and OmegaConf.select(preset, key) != sizes[size]:
            value = sizes[size]
            overrides.append(f"{key}=[{','.join(map(str, value))}]" if isinstance(value, list) else f"{key}={value}")
    return overrides


def run_prediff(cfg: DictConfig, model: str, paths: dict[str, Path]) -> Path:
    names = _stage_names(model)
    stage = STAGES[len(names) - 1]
    needed = FILES[stage]
    state_dicts = {kind: weights.read_weights(path, f"the reference PreDiff {KINDS[kind][0]}")
                   for kind, path in paths.items()}

    # every stage as `experiment=<its model>` trains it; the user's model.* overrides go to the converted stage
    shared = [o for o in given_overrides() if _key(o) != "model" and not _key(o).startswith("model.")]
    own = [o for o in given_overrides() if _key(o).startswith("model.")]
    chain, stored = [], []
    for i, (name, kind) in enumerate(zip(names, needed)):
        overrides = [f"experiment={name}", *shared, *(own if i == len(names) - 1 else [])]
        overrides += _width_overrides(kind, state_dicts[kind], _compose(overrides))
        chain.append(plain(_compose(overrides)))
        stored = overrides
    files = ReleasedFiles(state_dicts, {k: str(p) for k, p in paths.items()}, dict(zip(needed, names)))
    module = released_stage(chain, files)
    fitted = ""
    if stage == "prediff_align":
        module.fit_anticipation(build_datamodule(chain[-1]["dataset"]))
        fitted = f"\n  F₀ regression fitted on {int(module.anticipation.count)} training sequences"
    converted_from = {kind: {"file": path.name, "sha256": _sha256(path)} for kind, path in paths.items()}
    dst = _write(cfg, module, stored, converted_from, model)
    described = "\n".join(f"  {kind}={paths[kind]} ({describe_prediff(state_dicts[kind])})" for kind in needed)
    follow = ("earthcast sample ckpt_path={dst} knowledge=avg_intensity knowledge.n_sigma=4" if stage == "prediff_align"
              else "earthcast sample ckpt_path={dst}" if stage == "prediff_ldm"
              else "earthcast eval ckpt_path={dst}").format(dst=dst)
    print(f"converted model={model} from\n{described}{fitted}\n  → {dst}\n"
          f"  next: {follow}   (add paths.data_root=<your data> and trainer=gpu as needed)")
    return dst
