"""earthcast: experiment runner for deep-learning Earth-system forecasting.

`earthcast.load_model(ckpt_path)` returns the forecaster of a checkpoint as a plain `torch.nn.Module`
(imported on first use, so `import earthcast` and the CLI stay light)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load_model":
        from earthcast.lightning.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'earthcast' has no attribute {name!r}")
