"""scripts/bench_model.py: repeated `--set` flags add up (they used to replace each other silently)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_model.py"


def test_repeated_set_flags_all_reach_the_model_config():
    spec = importlib.util.spec_from_file_location("bench_model", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--model", "earthformer", "--set", "num_heads=2", "--set", "stem_scales=[[2,2,2],2]",
                             "base_units=16", "stem_dims=[8,16]"])
    model_cfg, dataset = bench.load_config(args)
    assert model_cfg.num_heads == 2 and model_cfg.base_units == 16
    assert list(model_cfg.stem_scales[0]) == [2, 2, 2] and list(model_cfg.stem_dims) == [8, 16]
    assert (dataset["height"], dataset["in_len"]) == (64, 13)  # the quickstart's shape by default
