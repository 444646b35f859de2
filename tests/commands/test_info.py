"""`earthcast info` end to end: shapes, parameters, GFLOPs, peak step memory, timings, info.json."""

from __future__ import annotations

import json
import time

import pytest
from omegaconf import OmegaConf

from earthcast.commands.info import _check_settings, prepare, time_calls
from earthcast.errors import UserError
from tests.conftest import earthcast

# the quickstart Earthformer on a 16×16 grid, with global vectors as in the SEVIR config (FLOP counting once
# failed on them): every part of the model runs, in seconds
SMALL = ["model=earthformer", "dataset.height=16", "dataset.width=16", "dataset.in_len=4", "dataset.out_len=3",
         "model.num_global_vectors=2"]


def test_info_bench_earthformer(workdir):
    out = workdir / "runs" / "info_bench"
    result = earthcast("info", *SMALL, "+bench=true", "warmup=0", "repeats=1", f"hydra.run.dir={out}",
                       cwd=workdir)
    facts = json.loads((out / "info.json").read_text())
    assert facts["model"] == "earthformer" and facts["model_config_name"] == "earthformer"
    assert facts["input_shape"] == [4, 16, 16, 1] and facts["output_shape"] == [3, 16, 16, 1]
    assert facts["parameters"] == facts["trainable_parameters"] > 0
    assert facts["gflops_forward_per_sample"] > 0
    # parameters + AdamW state alone are 12 bytes per parameter; activations come on top
    assert facts["peak_memory_mb_train_step"] * 2**20 > 12 * facts["parameters"]
    for key in ("train_step_s", "train_step_cpu_s", "train_step_after_eval_s", "inference_s",
                "achieved_gflops_per_s_train", "achieved_gflops_per_s_inference", "matmul_gflops_per_s_fp32",
                "matmul_gflops_per_s_bf16"):
        assert facts[key] > 0, key
    # the precision the step ran in (float32 here) is the rate the model is compared with
    assert facts["precision"] == "32-true"
    assert facts["train_fraction_of_matmul"] == facts["achieved_gflops_per_s_train"] / facts["matmul_gflops_per_s_fp32"]
    assert "parameters" in result.stdout and "info.json" in result.stdout
    assert not list(out.glob(".*.tmp"))  # written atomically: no temporary left behind


def test_time_calls_tells_waiting_from_computing():
    wall, cpu = time_calls(lambda: time.sleep(0.05), warmup=0, repeats=3)
    assert wall >= 0.05 and cpu < 0.02  # asleep: wall time passes, this process uses no CPU

    wall, cpu = time_calls(lambda: sum(range(300_000)), warmup=0, repeats=3)
    assert 0 < cpu <= 1.05 * wall + 0.005  # one thread computing: CPU time is the wall time it was running


def test_plus_bench_and_bench_both_set_the_key():
    assert prepare(["+bench=true", "bench=false", "++repeats=3", "+model.x=1"]) == [
        "bench=true", "bench=false", "++repeats=3", "+model.x=1"]


def test_bad_info_settings_are_user_errors():

    good = {"bench": False, "batch_size": 2, "warmup": 0, "repeats": 1}
    _check_settings(OmegaConf.create(good))
    for key, value in (("bench", "maybe"), ("batch_size", 0), ("repeats", 0), ("warmup", 1.5)):
        with pytest.raises(UserError, match=key):
            _check_settings(OmegaConf.create({**good, key: value}))


def test_info_in_the_trainers_precision(workdir):
    """A training step as `trainer.precision` would run it: bfloat16 autocast here."""
    out = workdir / "runs" / "info_bf16"
    earthcast("info", "model=unet", "model.base_units=4", "dataset.height=16", "dataset.width=16",
              "trainer.precision=bf16-mixed", f"hydra.run.dir={out}", cwd=workdir)
    facts = json.loads((out / "info.json").read_text())
    assert facts["precision"] == "bf16-mixed" and facts["peak_memory_mb_train_step"] > 0


def test_info_reports_model_facts(workdir):
    out = workdir / "runs" / "info"
    earthcast("info", "model=unet", "model.base_units=4", "dataset.height=32", "dataset.width=32",
              f"hydra.run.dir={out}", cwd=workdir)
    facts = json.loads((out / "info.json").read_text())
    assert facts["input_shape"] == [13, 32, 32, 1] and facts["output_shape"] == [12, 32, 32, 1]
    assert facts["parameters"] > 0 and facts["gflops_forward_per_sample"] > 0
