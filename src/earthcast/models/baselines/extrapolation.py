"""Optical-flow extrapolation: the standard nowcasting baseline (pysteps' Lucas–Kanade + semi-Lagrangian).

For every sample and channel, a motion field is estimated from the last `motion_frames` context frames with
pysteps' dense Lucas–Kanade (Shi–Tomasi corners tracked by OpenCV, vectors interpolated to the grid), and
the last frame is advected along it by backward semi-Lagrangian extrapolation, one step per output frame.
Intensities are carried unchanged (no growth or decay). No parameters: `earthcast train model=extrapolation`
skips fitting and only tests, like persistence.

pysteps is an optional dependency (the `baselines` extra); it is imported on first use.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings

import numpy as np
import torch

from earthcast.errors import UserError
from earthcast.models.base import MODELS, Forecaster, configured


def _pysteps_methods():
    """(LK motion, semi-Lagrangian extrapolation) from pysteps, or a one-line install hint."""
    try:
        # pysteps prints where its config file is on import; keep the CLI's stdout clean
        with contextlib.redirect_stdout(io.StringIO()):
            from pysteps import extrapolation, motion
    except ImportError as err:
        raise UserError(f"model=extrapolation needs pysteps and opencv ({err}); install them with "
                        f"pip install -e '.[baselines]'") from None
    return motion.get_method("LK"), extrapolation.get_method("semilagrangian")


class Extrapolation(Forecaster):
    """Advects the last context frame along the Lucas–Kanade motion of the last `motion_frames` frames.

    outval is what flows in across the border: a number, or 'min' for the last frame's minimum (0 for VIL,
    the coldest anomaly for SST)."""

    def __init__(self, in_len: int, out_len: int, motion_frames: int = 3, outval: float | str = "min",
                 motion_kwargs: dict | None = None):
        super().__init__(in_len, out_len)
        if in_len < 2:
            raise UserError(f"model=extrapolation needs at least 2 context frames to estimate motion; "
                            f"dataset.in_len is {in_len}")
        if motion_frames < 2:
            raise UserError(f"model.motion_frames={motion_frames}: Lucas–Kanade needs at least 2 frames")
        if not (outval == "min" or isinstance(outval, (int, float))):
            raise UserError(f"model.outval={outval!r}: use a number or 'min'")
        self.motion_frames = min(motion_frames, in_len)
        self.outval = outval
        self.motion_kwargs = dict(motion_kwargs or {})  # extra dense_lucaskanade arguments
        self._motion, self._extrapolate = _pysteps_methods()
        known = set(inspect.signature(self._motion).parameters) - {"input_images", "verbose"}
        for key in self.motion_kwargs:
            if key not in known:
                raise UserError(f"model.motion_kwargs.{key}: not an argument of pysteps' dense_lucaskanade; "
                                f"known: {', '.join(sorted(known))}")

    def velocity(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W) → (2, H, W) motion in pixels per frame (x then y, pysteps' convention)."""
        # with only a few tracked corners, pysteps' outlier test takes a covariance of too few vectors (numpy
        # and pysteps warn; the vectors are still used): routine for a baseline, not a problem to report
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return self._motion(frames[-self.motion_frames:], verbose=False, **self.motion_kwargs)

    def extrapolate(self, frames: np.ndarray) -> np.ndarray:
        """(T_in, H, W) → (T_out, H, W) for one sample and channel."""
        last = frames[-1]
        outval = float(last.min()) if self.outval == "min" else float(self.outval)
        return self._extrapolate(last, self.velocity(frames), self.out_len, outval=outval)

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[1] != self.in_len:
            raise ValueError(f"extrapolation built for {self.in_len} context frames, got {tuple(inputs.shape)}")
        # pysteps works in float64 numpy on the CPU, one 2-D field at a time
        frames = inputs.detach().to("cpu", torch.float64).numpy()
        batch, _, height, width, channels = frames.shape
        out = np.empty((batch, self.out_len, height, width, channels))
        for b in range(batch):
            for c in range(channels):
                out[b, ..., c] = self.extrapolate(frames[b, ..., c])
        return torch.from_numpy(out).to(device=inputs.device, dtype=inputs.dtype)


MODELS.register("extrapolation")(configured(Extrapolation))
