"""`earthcast sample` on the tiny PreDiff chain (vae → ldm → align through the real command line, chained by
checkpoint paths on a SEVIR-LR twin of 16×16 frames and 4×4 latents; seconds per stage)."""

from __future__ import annotations

import json

import pytest
import torch
import xarray as xr

from earthcast.commands.sample import device_settings
from earthcast.errors import UserError
from earthcast.metrics.stored import evaluate_stored
from tests.conftest import ONE_THREAD, assert_one_line_error, compose_config, earthcast


@pytest.fixture(scope="module")
def sampled(prediff_chain, workdir) -> dict:
    sample = workdir / "runs" / "prediff_sample"
    # only the checkpoint and the sampling settings: data and model are replayed from the checkpoint
    result = earthcast("sample", f"ckpt_path={prediff_chain['align']}/checkpoints/best.ckpt", "members=2",
                       "sampler=ddim", "sampler.steps=3", "knowledge=avg_intensity", "knowledge.n_sigma=2",
                       "max_batches=1", "figure_samples=2", f"hydra.run.dir={sample}", cwd=workdir, env=ONE_THREAD)
    return {**prediff_chain, "sample": sample, "sample_log": result.stdout}


def test_stages_chain_through_self_contained_checkpoints(sampled):
    prediff_chain = sampled
    vae_scores = json.loads((prediff_chain["vae"] / "metrics.json").read_text())
    assert vae_scores["latent_scale"] > 0 and vae_scores["latent_scale"] != 1.0  # measured on the val split
    ldm = torch.load(prediff_chain["ldm"] / "checkpoints" / "best.ckpt", weights_only=True)
    model = ldm["hyper_parameters"]["config"]["model"]
    assert model["latent_scale"] == pytest.approx(vae_scores["latent_scale"])
    assert any(k.startswith("vae.") for k in ldm["state_dict"]) and any(
        k.startswith("denoiser_ema.") for k in ldm["state_dict"])
    ldm_scores = json.loads((prediff_chain["ldm"] / "metrics.json").read_text())
    assert ldm_scores["crps"] is not None and ldm_scores["spread_skill_ratio"] is not None
    align_scores = json.loads((prediff_chain["align"] / "metrics.json").read_text())
    for key in ("align_mae_low_noise", "align_mae_high_noise", "anticipation_mae", "persistence_mae"):
        assert align_scores[key] is not None, key


def test_sample_writes_ensemble_outputs(sampled):
    prediff_chain = sampled
    run = prediff_chain["sample"]
    for name in ("predictions.nc", "metrics.json", "knowledge.png", "knowledge.gif", "knowledge_1.png", "report.md"):
        assert (run / name).is_file(), name
    with xr.open_dataset(run / "predictions.nc") as ds:
        assert ds["prediction"].dims == ("sample", "member", "lead_time", "y", "x")
        assert ds.sizes["member"] == 2 and ds.sizes["lead_time"] == 6 and ds.attrs["dataset"] == "sevirlr"
        assert ds.attrs["knowledge"] == "guide" and float(ds["prediction"].max()) <= 255.0
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("crps", "spread_skill_ratio", "csi_m", "csi_m_pool4", "csi_m_pool16", "member/csi_m",
                "member/csi_m_pool16", "mean_intensity_error", "persistence_ensemble/crps",
                "knowledge/f0_mean_intensity", "knowledge/forecast_mean_intensity"):
        assert metrics.get(key) is not None, key
    assert metrics["members"] == 2 and "steps=3" in metrics["sampler"]
    assert "steps" in prediff_chain["sample_log"]  # the progress bar over sampling steps
    # the stored file is in the evaluators' schema: scoring it again gives the same ensemble CRPS
    stored, _, _ = evaluate_stored(run / "predictions.nc")
    assert stored["crps"] == pytest.approx(metrics["crps"], rel=1e-4)


def test_sampling_honours_trainer_precision(prediff_chain, workdir):
    """Sampling is a Lightning test loop, so trainer.precision applies as in any evaluation: the same chains
    in bfloat16 autocast land elsewhere than in float32."""
    crps = {}
    for precision in ("32-true", "bf16-mixed"):
        run = workdir / "runs" / f"sample_{precision}"
        earthcast("sample", f"ckpt_path={prediff_chain['ldm']}/checkpoints/best.ckpt", "members=2", "sampler.steps=2",
                  "max_batches=1", "figure_samples=0", "device=cpu", f"trainer.precision={precision}",
                  f"hydra.run.dir={run}", cwd=workdir, env=ONE_THREAD)
        crps[precision] = json.loads((run / "metrics.json").read_text())["crps"]
    assert crps["32-true"] is not None and crps["bf16-mixed"] is not None and crps["32-true"] != crps["bf16-mixed"]


def test_sampling_under_ddp_scores_every_sequence_once(sampled, workdir):
    """Two ranks draw the same chains as one process (each chain's noise comes from its batch's seed) and
    their scores and forecasts are joined."""
    run = workdir / "runs" / "sample_ddp"
    earthcast("sample", f"ckpt_path={sampled['align']}/checkpoints/best.ckpt", "members=2", "sampler=ddim",
              "sampler.steps=3", "knowledge=avg_intensity", "knowledge.n_sigma=2", "max_batches=1", "figure_samples=0",
              "device=null", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
              "dataset.eval_batch_size=2", f"hydra.run.dir={run}", cwd=workdir, env=ONE_THREAD)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_samples"] == 4 and metrics["crps"] is not None  # one batch of 2 on each of two ranks
    with xr.open_dataset(run / "predictions.nc") as ds:
        assert ds.sizes["sample"] == 4 and ds.sizes["member"] == 2
    assert not list(run.glob("predictions.rank*"))


def test_device_names_become_trainer_settings():
    assert device_settings(None) == {}
    assert device_settings("cpu")["accelerator"] == "cpu" and device_settings("auto")["devices"] == 1
    assert device_settings("cuda:1") == {"devices": [1], "num_nodes": 1, "strategy": "auto", "accelerator": "gpu"}
    with pytest.raises(UserError, match="device='tpu'"):
        device_settings("tpu")


def test_knowledge_control_needs_an_alignment_checkpoint(prediff_chain, workdir):
    ldm_ckpt = prediff_chain["ldm"] / "checkpoints" / "best.ckpt"
    result = earthcast("sample", f"ckpt_path={ldm_ckpt}", "knowledge=avg_intensity", cwd=workdir, check=False,
                       env=ONE_THREAD)
    assert_one_line_error(result, "knowledge.mode=guide needs a prediff_align checkpoint")


def test_quickstart_stages_compose_on_the_same_data():
    stages = {name: compose_config([f"experiment={name}"])
              for name in ("prediff_quickstart", "prediff_quickstart_ldm", "prediff_quickstart_align")}
    assert [cfg.module for cfg in stages.values()] == ["prediff_vae", "prediff_ldm", "prediff_align"]
    datasets = [cfg.dataset for cfg in stages.values()]
    assert all(d == datasets[0] for d in datasets) and datasets[0].name == "sevirlr"


@pytest.mark.slow
def test_quickstart_script_trains_all_stages_within_20_minutes(workdir):
    """`scripts/prediff_quickstart.sh` end to end (about 15 minutes on 2 shared cores)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = workdir / "prediff_quickstart"
    env = {"EARTHCAST": str(Path(sys.executable).parent / "earthcast"), "PATH": "/usr/bin:/bin"}
    subprocess.run([str(repo / "scripts" / "prediff_quickstart.sh"), str(out),
                    f"paths.data_root={workdir / 'data_quickstart'}"], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=3600)
    timings = dict(line.split()[:2] for line in (out / "timings.txt").read_text().splitlines()[1:])
    assert int(timings["training"].rstrip("s")) <= 20 * 60
    metrics = json.loads((out / "sample" / "metrics.json").read_text())
    assert metrics["crps"] < metrics["persistence_ensemble/crps"]
    assert (out / "sample" / "knowledge.png").is_file() and (out / "sample" / "knowledge.gif").is_file()
