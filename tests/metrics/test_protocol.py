"""The protocol fingerprint changes when and only when the protocol changes; model records hash what was scored."""

import hashlib

import pytest
import torch

import earthcast.metrics.protocol as protocol_module
from earthcast.metrics import SevirEvaluator
from earthcast.metrics.evaluation import protocol_warning
from earthcast.metrics.protocol import differences, model_record, run_protocol

G = torch.Generator().manual_seed(0)
TARGET = torch.rand(6, 3, 8, 8, generator=G) * 200
CONTEXT = torch.rand(6, 2, 8, 8, generator=G) * 200
PRED = torch.rand(6, 3, 8, 8, generator=G) * 200
META = {"event_id": ["S1", "S1", "S2", "S3", "S4", "S5"], "seq_start": torch.tensor([0, 12, 0, 0, 0, 0]),
        "event_type": ["Hail"] * 6}
SETTINGS = dict(thresholds=[16, 74], pool_sizes=[4], fss_thresholds=[74], fss_scales=[3], frame_minutes=5)


def fingerprint(pred=PRED, target=TARGET, context=CONTEXT, meta=META, batches=1, run=None, **options):
    evaluator = SevirEvaluator(**{**SETTINGS, **options})
    n = target.shape[0]
    bounds = [round(i * n / batches) for i in range(batches + 1)]
    for start, stop in zip(bounds, bounds[1:]):
        chunk = {"event_id": meta["event_id"][start:stop], "seq_start": meta["seq_start"][start:stop],
                 "event_type": meta["event_type"][start:stop]}
        evaluator.update(pred[start:stop], target[start:stop], context=context[start:stop], meta=chunk)
    run = {"dataset": "sevir", "split": "test", "nan_policy": "fail", "synthetic": False, **(run or {})}
    return run_protocol(evaluator.results()["protocol"], **run)


BASE = fingerprint()


@pytest.mark.parametrize("name,changed", [
    ("another model's forecasts", dict(pred=PRED.flip(-1))),
    ("batching", dict(batches=3)),
    ("sample order", dict(pred=PRED.flip(0), target=TARGET.flip(0), context=CONTEXT.flip(0),
                          meta={k: v[::-1] if isinstance(v, list) else v.flip(0) for k, v in META.items()})),
    ("bootstrap settings", dict(bootstrap={"replicates": 50, "level": 0.9, "seed": 1})),
    ("no persistence reference", dict(reference=False)),
    ("capacity", dict(max_leads=8, max_members=4)),
    ("event types", dict(event_types=["Hail"])),
])
def test_fingerprint_stays_when_the_protocol_does(name, changed):
    assert fingerprint(**changed)["fingerprint"] == BASE["fingerprint"], name


@pytest.mark.parametrize("name,changed,key", [
    ("one sample fewer", dict(pred=PRED[:5], target=TARGET[:5], context=CONTEXT[:5],
                              meta={k: v[:5] for k, v in META.items()}), "n_samples"),
    ("another sequence start", dict(meta={**META, "seq_start": torch.tensor([0, 24, 0, 0, 0, 0])}), "samples_sha256"),
    ("another event", dict(meta={**META, "event_id": ["S1", "S1", "S2", "S3", "S4", "S9"]}), "samples_sha256"),
    ("thresholds", dict(thresholds=[16, 133]), "thresholds"),
    ("pooling", dict(pool_sizes=[2]), "pool_sizes"),
    ("value scale", dict(value_scale=1.0), "value_scale"),
    ("FSS scales", dict(fss_scales=[5]), "fss_scales"),
    ("CRPS estimator", dict(crps_estimator="plain"), "crps_estimator"),
    ("lead times", dict(pred=PRED[:, :2], target=TARGET[:, :2]), "lead_frames"),
    ("context frames", dict(context=CONTEXT[:, 1:]), "context_frames"),
    ("grid", dict(pred=PRED[..., :6, :6], target=TARGET[..., :6, :6], context=CONTEXT[..., :6, :6]), "grid"),
    ("split", dict(run={"split": "val"}), "split"),
    ("dataset", dict(run={"dataset": "sevirlr"}), "dataset"),
    ("synthetic twin", dict(run={"synthetic": True}), "synthetic"),
    ("nan policy", dict(run={"nan_policy": "exclude"}), "nan_policy"),
])
def test_fingerprint_changes_with_the_protocol_and_names_what_changed(name, changed, key):
    other = fingerprint(**changed)
    assert other["fingerprint"] != BASE["fingerprint"], name
    found = differences(BASE, other)
    assert any(line.startswith(f"{key}:") for line in found), (name, found)
    warning = protocol_warning(BASE, other, "run B")
    assert warning.startswith("protocol differs from run B:") and "\n" not in warning


def test_fingerprint_changes_with_the_earthcast_version(monkeypatch):
    monkeypatch.setattr(protocol_module, "__version__", "99.0")
    assert fingerprint()["fingerprint"] != BASE["fingerprint"]


def test_model_record_hashes_config_and_checkpoint(tmp_path):
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"weights")
    record = model_record("unet", {"name": "unet", "depth": 2}, checkpoint)
    assert record["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert model_record("unet", {"depth": 2, "name": "unet"}, None)["config_sha256"] == record["config_sha256"]
    assert model_record("unet", {"name": "unet", "depth": 3}, None)["config_sha256"] != record["config_sha256"]
    assert "checkpoint" not in model_record("persistence", {}, "persistence")  # not a file: no hash
