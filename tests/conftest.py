"""Helpers shared by the whole suite: composing configs as a command would, running the real `earthcast`
command in a subprocess on tiny synthetic twins, tiny PreDiff run configs, and one-line-error checks."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from earthcast.config import config_dir

# Tiny everything: 32×32 frames, a handful of events, one short epoch that is validated.
TINY_DATA = ["dataset=sevir_synth", "dataset.synth.n_events=24", "dataset.synth.img_size=32",
             "dataset.batch_size=2", "dataset.eval_batch_size=2",
             "dataset.num_workers=0"]
TINY_TRAIN = ["model=unet", "model.base_units=4", "model.depth=2", "trainer.max_epochs=1",
              "trainer.check_val_every_n_epoch=1",
              "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
              "outputs.plot_samples=1", "outputs.max_prediction_samples=4", "callbacks.progress_bar=null"]


# dataset=gridded on a tiny synthetic store: 16×16, three months of 6-hourly SST, a masked continent
TINY_GRIDDED = ["dataset=gridded_synth", "evaluator=gridded", "dataset.synth.height=16", "dataset.synth.width=16",
                "dataset.synth.end=2021-04-01", "dataset.splits.train=[null,'2021-03-01']",
                "dataset.splits.val=['2021-03-01','2021-03-15']", "dataset.splits.test=['2021-03-15',null]",
                "dataset.batch_size=4", "dataset.eval_batch_size=4"]


def compose_config(overrides, name: str = "train"):
    """The config `earthcast <name> <overrides>` would run with (hydra node included), without running it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=True)


def run_config(overrides=(), name: str = "train") -> dict:
    """The plain, resolved run config of `earthcast <name> <overrides>`: what a LightningModule or a datamodule
    is built from (the run directory is the current one)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=name, overrides=[*overrides, "paths.output_dir=."])
    return OmegaConf.to_container(cfg, resolve=True)


def dataset_config(group: str, **values) -> dict:
    """configs/dataset/<group>.yaml as composed, with `values` replacing keys (a hand-written root, its shape)."""
    return {**run_config([f"dataset={group}", "paths.data_root=data"])["dataset"], **values}


def earthcast(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"PYTHONWARNINGS": "ignore", **(env or {})})
    result = subprocess.run([sys.executable, "-m", "earthcast", *args], cwd=cwd, env=full_env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"earthcast {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def earthcast_in_process(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`earthcast <args>` through the very main() the console script calls, but in this process: a fraction of a
    second per call once the imports are loaded, instead of a new interpreter (which takes 3–20 s on a shared
    machine). Exit code and output as a real run gives them; an exception escaping main() is reported as Python
    would report it there (a traceback on stderr, exit code 1). Global state a run changes (signal handlers,
    logging, argv, environment, working directory) is restored."""
    import contextlib
    import io
    import logging
    import signal
    import traceback

    from earthcast.cli import main
    from earthcast.signals import GUARD

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    handlers = {signum: signal.getsignal(signum) for signum in handled}
    root = logging.getLogger()
    logging_state = (list(root.handlers), root.level)
    saved_env, saved_argv, saved_cwd = dict(os.environ), list(sys.argv), os.getcwd()
    os.environ.pop("HYDRA_FULL_ERROR", None)
    os.environ.update(env or {})
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main(list(args))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:  # noqa: BLE001 - what would reach the user as a traceback
                traceback.print_exc(file=stderr)
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv[:] = saved_argv
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        GUARD.installed.clear()
        GUARD.reset()
        root.handlers[:], root.level = logging_state
    return subprocess.CompletedProcess(["earthcast", *args], code, stdout.getvalue(), stderr.getvalue())


def assert_one_line_error(result, *fragments):
    """Bad input: exit code 2, one line on stderr naming the thing and the fix, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared 2-core machine every parallel region
    would wait for a descheduled thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("earthcast")


@pytest.fixture(scope="session")
def data_root(workdir) -> Path:
    root = workdir / "data"
    earthcast("data", "synth", *TINY_DATA, f"paths.data_root={root}", cwd=workdir)
    return root


@pytest.fixture(scope="session")
def trained_run(workdir, data_root) -> Path:
    run_dir = workdir / "runs" / "train"
    earthcast("train", *TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
              cwd=workdir)
    return run_dir


@pytest.fixture(scope="session")
def gridded_data_root(workdir) -> Path:
    root = workdir / "data_gridded"
    earthcast("data", "synth", *TINY_GRIDDED, f"paths.data_root={root}", cwd=workdir)
    return root


@pytest.fixture(scope="session")
def gridded_run(workdir, gridded_data_root) -> Path:
    """A UNet trained on the tiny gridded store."""
    run_dir = workdir / "runs" / "gridded_unet"
    earthcast("train", *TINY_GRIDDED, *TINY_TRAIN, f"paths.data_root={gridded_data_root}", f"hydra.run.dir={run_dir}",
              cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    return run_dir


@pytest.fixture(scope="session")
def full_eval(trained_run, workdir) -> Path:
    """The trained checkpoint scored on the whole test split (5 events), every forecast stored."""
    out = workdir / "runs" / "eval_full"
    earthcast("eval", f"ckpt_path={trained_run}/checkpoints/best.ckpt", "trainer.limit_test_batches=null",
              "outputs.max_prediction_samples=null", f"hydra.run.dir={out}", cwd=workdir)
    return out


# -- PreDiff at toy size: 8×8 frames, 3 → 2 frames, 4×4×2 latents, 100 diffusion steps ----------------------
# Each builder returns the plain run config a module is built from (the shipped presets with tiny sizes), with
# its parents' part inline, as a trained checkpoint stores it.
TINY_PREDIFF = ["dataset.synth.img_size=8", "dataset.in_len=3", "dataset.out_len=2",
                "evaluator.thresholds=[16,74]", "evaluator.pool_sizes=[4]", "evaluator.fss_thresholds=[]",
                "evaluator.reference=false", "optim.lr=1e-3", "optim.weight_decay=0.0"]
TINY_VAE = {"channels": [8, 8], "blocks_per_level": 1, "latent_channels": 2, "norm_groups": 4}
TINY_NETWORK = {"base_units": 8, "depth": [1, 1], "num_heads": 2, "norm_groups": 4}


def _prediff_config(stage: str, model: dict) -> dict:
    config = run_config([f"experiment=prediff_{stage}", *TINY_PREDIFF])
    for key, value in model.items():
        config["model"][key] = {**config["model"].get(key, {}), **value} if isinstance(value, dict) else value
    return copy.deepcopy(config)


def vae_config() -> dict:
    return _prediff_config("vae", {"autoencoder": TINY_VAE})


def ldm_spec(prediction_type: str = "eps") -> dict:
    """The latent setup {vae, latent_scale, denoiser, diffusion} a tiny LDM stage trains with."""
    model = _prediff_config("ldm", {"denoiser": TINY_NETWORK,
                                    "diffusion": {"num_timesteps": 100, "prediction_type": prediction_type}})["model"]
    return {"vae": vae_config()["model"]["autoencoder"], "latent_scale": 1.0, "denoiser": model["denoiser"],
            "diffusion": model["diffusion"]}


def ldm_config(prediction_type: str = "eps") -> dict:
    """A tiny LDM config whose parent VAE is inline (what a prediff_ldm checkpoint stores)."""
    return _prediff_config("ldm", {**ldm_spec(prediction_type), "ema": {"decay": 0.9},
                                   "sampling": {"members": 2, "sampler": {"name": "ddim", "steps": 3, "eta": 0.0}}})


def align_config() -> dict:
    return _prediff_config("align", {"ldm": ldm_spec(), "network": TINY_NETWORK})


def prediff_batch(n: int = 2, seed: int = 0) -> dict:
    """A batch of smooth blobs on the dataset scale [0, 1] (3 → 2 frames of 8×8), brighter in some samples."""
    g = torch.Generator().manual_seed(seed)
    in_len, length = 3, 5
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centre = torch.rand(n, 1, 2, generator=g) * 4 + 2
    drift = torch.linspace(0, 1, length).reshape(1, length, 1)
    cy, cx = (centre[..., 0] + drift[..., 0]), (centre[..., 1] + drift[..., 0])
    peak = 0.3 + 0.6 * torch.rand(n, 1, generator=g)
    frames = peak[..., None, None] * torch.exp(-((yy - cy[..., None, None]) ** 2 + (xx - cx[..., None, None]) ** 2)
                                              / 6.0)
    frames = frames.unsqueeze(-1)  # B×T×H×W×1
    return {"inputs": frames[:, :in_len], "targets": frames[:, in_len:]}


def fit_steps(parameters, loss_fn, steps: int, lr: float) -> tuple[float, float]:
    """(first, final) loss of `steps` Adam steps on a fixed loss: does a network learn what it should."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    with torch.no_grad():
        return first, loss_fn().item()


# -- PreDiff end to end: vae → ldm → align through the real command line on a tiny SEVIR-LR twin -------------
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the stages are tiny; a second thread only waits on a shared machine
TINY_STAGE = ["dataset.synth.n_events=12", "dataset.synth.img_size=16", "dataset.batch_size=4",
              "dataset.eval_batch_size=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
              "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "callbacks.progress_bar=null",
              "logger=csv", "outputs.plot_samples=0", "outputs.max_prediction_samples=4"]


def prediff_stage(workdir: Path, name: str, *args: str) -> Path:
    run_dir = workdir / "runs" / f"prediff_{name}"
    earthcast("train", f"experiment=prediff_{name}", *TINY_STAGE, *args, f"hydra.run.dir={run_dir}", cwd=workdir,
              env=ONE_THREAD)
    return run_dir


@pytest.fixture(scope="session")
def prediff_chain(workdir) -> dict[str, Path]:
    """Run directories of the three stages, each handed the best checkpoint of the one before."""
    data_root = workdir / "data_prediff"  # the SEVIR-LR twin is generated by the first stage on first use
    vae = prediff_stage(workdir, "vae", f"paths.data_root={data_root}", "model.frames_per_step=16")
    ldm = prediff_stage(workdir, "ldm", f"paths.data_root={data_root}", f"model.vae_ckpt={vae}/checkpoints/best.ckpt",
                        "model.sampling.members=2", "model.sampling.sampler.steps=2")
    align = prediff_stage(workdir, "align", f"paths.data_root={data_root}",
                          f"model.ldm_ckpt={ldm}/checkpoints/best.ckpt")
    return {"vae": vae, "ldm": ldm, "align": align}
