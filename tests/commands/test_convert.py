"""`earthcast convert`: published weights → a checkpoint that eval takes; bad weight files get one line."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_one_line_error, earthcast

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "reference_fixtures"
pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"reference fixtures not found at {FIXTURES} (they sit beside the checkout in CI, not on user machines)")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, dict]:
    return {name: torch.load(FIXTURES / f"earthformer_{name}.pt", weights_only=True)["state_dict"]
            for name in ("sevirlr", "enso")}


def convert(tmp_path: Path, weights: Path, *args: str, check: bool = False):
    return earthcast("convert", f"weights={weights}", *args, f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path, check=check)


def saved(tmp_path: Path, obj, name: str = "weights.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


class Payload:
    """A pickled object whose unpickling would run code: weights_only loading must refuse it."""

    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PWNED",))


def _bad_files(tmp_path: Path, published: dict) -> dict[str, tuple[Path, list[str]]]:
    sevirlr = dict(published["sevirlr"])
    missing = {k: v for k, v in sevirlr.items() if not k.startswith("decoder.cross_blocks.1.")}
    extra = {**sevirlr, "encoder.blocks.0.0.attn_l.0.extra.weight": torch.zeros(2)}
    reshaped = {**sevirlr, "z_proj.weight": torch.zeros(64, 64)}
    good = saved(tmp_path, sevirlr, "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": Payload()}, handle)
    return {
        "other configuration": (saved(tmp_path, published["enso"], "enso.pt"),
                                ["does not fit", "12→14-frame", "model=earthformer_enso dataset=enso"]),
        "truncated": (truncated, ["cannot read", "truncated"]),
        "arbitrary pickle": (evil, ["pickled Python objects", "weights_only"]),
        "not a dict": (saved(tmp_path, [torch.zeros(1)], "list.pt"), ["holds list", "not a state_dict"]),
        "missing keys": (saved(tmp_path, missing, "missing.pt"), ["missing: decoder.cross_blocks.1."]),
        "unexpected keys": (saved(tmp_path, extra, "extra.pt"), ["unexpected: encoder.blocks.0.0.attn_l.0.extra"]),
        "shape mismatch": (saved(tmp_path, reshaped, "shape.pt"), ["shape mismatch: z_proj.weight (64, 64) vs (128, 128)"]),
        "absent file": (tmp_path / "absent.pt", ["weights file not found"]),
    }


@pytest.mark.parametrize("case", ["other configuration", "truncated", "arbitrary pickle", "not a dict",
                                  "missing keys", "unexpected keys", "shape mismatch", "absent file"])
def test_bad_weight_files(tmp_path, published, case):
    weights, fragments = _bad_files(tmp_path, published)[case]
    dst = tmp_path / "out" / "converted.ckpt"
    result = convert(tmp_path, weights, "model=earthformer_sevirlr", "dataset=sevirlr", f"dst={dst}")
    assert_one_line_error(result, str(weights.name), *fragments)
    assert not dst.parent.exists() or not any(dst.parent.iterdir())  # nothing that looks like a checkpoint
    assert not (Path(__file__).parent / "PWNED").exists()


def test_already_converted_and_lightning_checkpoints(tmp_path, published):
    # a Lightning checkpoint of the reference code: the model's keys under a module prefix, other state beside
    lightning = {"state_dict": {f"torch_nn_module.{k}": v for k, v in published["sevirlr"].items()},
                 "epoch": 3, "global_step": 120}
    ckpt = tmp_path / "from_lightning.ckpt"
    convert(tmp_path, saved(tmp_path, lightning, "lightning.ckpt"), "model=earthformer_sevirlr", "dataset=sevirlr",
            f"dst={ckpt}", check=True)
    assert ckpt.is_file()
    again = convert(tmp_path, ckpt, "model=earthformer_sevirlr", "dataset=sevirlr")
    assert_one_line_error(again, "already an earthcast checkpoint", "init_from")


def test_converted_checkpoint_evaluates_and_fine_tunes(tmp_path, published):
    """convert → eval on files in the real SEVIR-LR layout (a synthetic twin at the real 128×128 size) →
    train init_from= for a few steps; the stored overrides rebuild the published recipe."""
    root = tmp_path / "data"
    earthcast("data", "synth", "dataset=sevirlr_synth", "dataset.synth.img_size=128", "dataset.synth.n_events=12",
              f"paths.data_root={root}", cwd=tmp_path)
    ckpt = tmp_path / "sevirlr.ckpt"
    convert(tmp_path, saved(tmp_path, published["sevirlr"]), "model=earthformer_sevirlr", "dataset=sevirlr",
            f"dst={ckpt}", check=True)
    stored = torch.load(ckpt, weights_only=True)
    assert stored["earthcast"]["overrides"][0] == "experiment=sevirlr_earthformer"
    assert stored["hyper_parameters"]["config"]["trainer"]["precision"] == "32-true"

    data = [f"dataset.root={root / 'sevirlr_synth'}", "dataset.num_workers=0", "dataset.eval_batch_size=2",
            "trainer.limit_test_batches=2", "trainer.accelerator=cpu"]
    eval_dir = tmp_path / "eval"
    earthcast("eval", f"ckpt_path={ckpt}", *data, "outputs.plot_samples=0", f"hydra.run.dir={eval_dir}",
              cwd=tmp_path)
    assert (eval_dir / "metrics.json").is_file()

    tune_dir = tmp_path / "tune"
    result = earthcast("train", "experiment=sevirlr_earthformer", f"init_from={ckpt}", *data,
                       "dataset.batch_size=2", "optim.total_batch_size=2", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "outputs.plot_samples=0",
                       "callbacks.progress_bar=null", f"hydra.run.dir={tune_dir}", cwd=tmp_path)
    assert "init_from" in result.stdout + result.stderr
    assert (tune_dir / "checkpoints" / "last.ckpt").is_file()
    resumed = earthcast("train", f"ckpt_path={ckpt}", *data, cwd=tmp_path, check=False)
    assert_one_line_error(resumed, "converted", "init_from=")


def test_converted_enso_weights_evaluate_on_files_in_the_icar_enso_layout(tmp_path, published):
    """The published ICAR-ENSO model through convert → eval, on a small synthetic archive in the real layout
    (the recipe's fixed SST scaling rides in the converted checkpoint)."""
    root = tmp_path / "data"
    earthcast("data", "synth", "dataset=enso_synth", f"paths.data_root={root}", cwd=tmp_path)
    ckpt = tmp_path / "enso.ckpt"
    convert(tmp_path, saved(tmp_path, published["enso"]), "model=earthformer_enso", "dataset=enso", f"dst={ckpt}",
            check=True)
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["config"]["dataset"]["norm"]["sst_min"] < -16
    eval_dir = tmp_path / "eval"
    earthcast("eval", f"ckpt_path={ckpt}", f"dataset.root={root / 'enso_synth'}", "dataset.n_cmip6_models=3",
              "dataset.cmip6_records=30", "dataset.n_cmip5_models=5", "dataset.cmip5_records=30",
              "dataset.splits.train={cmip6:[1,3],cmip5:[1,3]}", "dataset.splits.val={cmip5:[4,4]}",
              "dataset.splits.test={cmip5:[5,5]}", "dataset.num_workers=0", "trainer.accelerator=cpu",
              "trainer.limit_test_batches=1", "outputs.plot_samples=0", f"hydra.run.dir={eval_dir}", cwd=tmp_path)
    assert "nino34_corr_m" in (eval_dir / "metrics.json").read_text()
