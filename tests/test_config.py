"""The configs every command composes: every preset, the run directory rule, the monitored score, the model
variants over their base, the SLURM launcher."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from earthcast.config import config_dir
from earthcast.lightning.trainer import NATIVE_BF16
from earthcast.models import build_model
from tests.conftest import compose_config, run_config

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
COMMANDS_WITH_RUN_DIRS = ("train", "eval", "predict", "sample", "info")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_composes(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.model.name and cfg.dataset.name and cfg.optim.lr > 0


@pytest.mark.parametrize("command", COMMANDS_WITH_RUN_DIRS)
def test_each_command_runs_in_its_own_directory(command):
    cfg = compose_config([], name=command)
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert hydra["run"]["dir"] == "${paths.output_root}/${hydra:job.config_name}/${earthcast.run_id:}"
    # a launcher (hydra/launcher=slurm) resolves the sweep directory before any job's Hydra config exists
    assert cfg.hydra.sweep.dir.startswith(f"outputs/{command}/multirun/")
    assert hydra["job"]["config_name"] == command and not hydra["job"]["chdir"]


def test_the_evaluator_names_the_monitored_score():
    assert run_config([])["monitor"] == {"metric": "csi_m", "mode": "max"}
    assert run_config(["experiment=enso_synth_earthformer"])["monitor"] == {"metric": "nino34_corr_m", "mode": "max"}
    assert run_config(["experiment=prediff_vae"])["monitor"] == {"metric": "loss", "mode": "min"}
    callbacks = run_config(["evaluator=enso"])["callbacks"]
    assert callbacks["model_checkpoint"]["monitor"] == callbacks["early_stopping"]["monitor"] == "val/nino34_corr_m"


def test_model_variants_restate_only_what_differs_from_their_base():
    base = (config_dir() / "model" / "earthformer.yaml").read_text()
    for variant in ("earthformer_sevir", "earthformer_sevirlr", "earthformer_enso", "earthformer_quickstart"):
        text = (config_dir() / "model" / f"{variant}.yaml").read_text()
        assert "- earthformer" in text and len(text.splitlines()) < len(base.splitlines()) / 2, variant
    sevir = run_config(["model=earthformer_sevir", "dataset=sevir"])["model"]
    assert (sevir["base_units"], sevir["num_heads"], sevir["self_pattern"]) == (128, 4, "axial")


def test_the_default_is_the_small_earthformer_with_its_input_skip():
    default, published, unet = (compose_config(args) for args in
                                ([], ["experiment=quickstart_earthformer"], ["experiment=quickstart_unet"]))
    assert default.model.name == published.model.name == "earthformer" and unet.model.name == "unet"
    assert default.model.input_skip_leads == default.dataset.out_len == 12 and published.model.input_skip_leads == 0
    assert default.trainer.precision == published.trainer.precision == NATIVE_BF16
    assert (default.trainer.max_epochs, published.trainer.max_epochs, unet.trainer.max_epochs) == (14, 29, 12)
    assert (default.loss, published.loss, unet.loss) == ("balanced_mse_mae", "mse", "mse")
    # the demo's twin is coarser and has its own root; the other presets keep the 64×64 twin
    assert (default.dataset.height, published.dataset.height, unet.dataset.height) == (48, 64, 64)
    assert default.dataset.root != published.dataset.root == unet.dataset.root
    model = build_model(default.model)
    assert 300_000 <= sum(p.numel() for p in model.parameters()) <= 400_000  # trains in minutes on 2 cores
    assert model.input_skip is not None and build_model(published.model).input_skip is None
    # a baseline swapped into the default recipe composes cleanly (the preset sets no model-specific keys)
    assert compose_config(["model=unet"]).model.name == "unet"


def test_slurm_preset_runs_one_task_per_gpu():
    cfg = compose_config(["hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.gpus_per_node=2",
                    "trainer.devices=2", "trainer.num_nodes=3"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 2
    assert launcher.nodes == 3
