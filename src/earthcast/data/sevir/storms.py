"""Storms of the synthetic SEVIR twin: one 4-hour VIL event at a time, from a seeded generator.

Physics, per 4-hour event (49 frames of 5 min over a 384 km square, any pixel count):
  * steering wind = a mean flow that veers and speeds up or slows over the event, plus a few travelling
    non-divergent waves (from a stream function), so motion varies smoothly in space and time;
  * convective cells = elliptical Gaussian cores that move with the wind at their position plus a deviant
    (storm-relative) motion, grow and decay over a 30–240 min life cycle, widen as they mature, and, for
    supercell-type events, split into right- and left-moving storms;
  * the cell cores carry a fine random texture and are embedded in a weak widespread (stratiform) field that
    waxes and wanes; both are carried by the domain-averaged wind (an exact sub-pixel Fourier shift, much
    cheaper than per-pixel semi-Lagrangian advection);
  * event types choose the organisation: squall lines (Thunderstorm Wind), supercells (Hail, Tornado,
    Funnel Cloud), repeatedly forming cells on one track (Flash Flood, Heavy Rain, Flood), short pulse
    storms (Lightning); "random" events (ids starting with R, no event type) hold little weather.
So most pixels are 0, a heavy tail occasionally reaches the 219 threshold, persistence degrades with lead
time, and the motion is predictable enough for a learned model to beat persistence.

Determinism: every event draws only from the generator it is handed (earthcast.data.sevir.synth seeds one
per event).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAMES, FRAME_MINUTES, DOMAIN_KM = 49, 5, 384.0


@dataclass(frozen=True)
class StormStyle:
    layout: str  # "line", "supercell", "training" or "scattered"
    cells: tuple[int, int]  # number of primary cells
    speed: tuple[float, float]  # steering wind, km/min (0.6 km/min = 10 m/s)
    peak: tuple[float, float]  # peak core value before texture, VIL pixel units
    lifetime: tuple[float, float]  # minutes
    split_prob: float = 0.0
    stratiform: float = 25.0  # amplitude of the widespread light field


LINE = StormStyle("line", (8, 14), (0.6, 1.3), (90, 200), (60, 150), stratiform=55.0)
SUPERCELL = StormStyle("supercell", (3, 6), (0.5, 1.1), (140, 245), (100, 240), split_prob=0.5)
WEAK_SUPERCELL = StormStyle("supercell", (2, 5), (0.4, 1.0), (110, 200), (70, 180), split_prob=0.3)
TRAINING = StormStyle("training", (7, 12), (0.2, 0.55), (100, 200), (50, 120), stratiform=65.0)
PULSE = StormStyle("scattered", (6, 12), (0.2, 0.8), (80, 190), (30, 80), stratiform=30.0)
QUIET = StormStyle("scattered", (0, 3), (0.2, 1.0), (20, 120), (30, 120), stratiform=30.0)
#: storm event type → (share of storm events, style); shares are illustrative, not SEVIR's counts
EVENT_TYPES = {"Thunderstorm Wind": (0.40, LINE), "Hail": (0.25, SUPERCELL), "Tornado": (0.07, SUPERCELL),
               "Funnel Cloud": (0.03, WEAK_SUPERCELL), "Flash Flood": (0.12, TRAINING),
               "Heavy Rain": (0.08, TRAINING), "Flood": (0.03, TRAINING), "Lightning": (0.02, PULSE)}


# ----------------------------------------------------------------------------------------------- physics


class SteeringWind:
    """Smooth wind (km/min) = veering, accelerating mean flow + travelling stream-function waves."""

    def __init__(self, rng: np.random.Generator, speed: tuple[float, float]):
        self.speed = rng.uniform(*speed)
        self.heading = rng.uniform(0, 2 * np.pi)
        self.veer = rng.normal(0, 0.35) / 240  # rad/min: typically ±20° over the event
        self.accel = rng.uniform(-0.3, 0.3) / 240  # relative change of speed per minute
        wavenumber = 2 * np.pi / rng.uniform(250, 900, 3)  # rad/km
        direction = rng.uniform(0, 2 * np.pi, 3)
        self.kx, self.ky = wavenumber * np.cos(direction), wavenumber * np.sin(direction)
        # stream-function amplitude so each wave perturbs the wind by up to ~30% of the mean
        self.amp = 0.3 * max(self.speed, 0.3) * rng.uniform(0.3, 1.0, 3) / wavenumber
        self.phase = rng.uniform(0, 2 * np.pi, 3)
        self.drift = rng.normal(0, 2 * np.pi / 600, 3)  # rad/min: waves evolve over hours

    def __call__(self, x: np.ndarray, y: np.ndarray, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heading = self.heading + self.veer * t
        speed = self.speed * np.maximum(1 + self.accel * t, 0.3)
        x, y, t = np.asarray(x)[..., None], np.asarray(y)[..., None], np.asarray(t)[..., None]
        cos = self.amp * np.cos(self.kx * x + self.ky * y + self.phase + self.drift * t)
        # u = dψ/dy, v = -dψ/dx for ψ = Σ amp·sin(k·x + phase): non-divergent perturbation
        return speed * np.cos(heading) + (self.ky * cos).sum(-1), speed * np.sin(heading) - (self.kx * cos).sum(-1)


def periodic_textures(rng: np.random.Generator, n: int, slopes: tuple[float, float]) -> np.ndarray:
    """Spectrum (n × n, complex) of two zero-mean, unit-variance periodic random fields with power ∝ k^-slope
    (k in cycles per km), packed as the real and imaginary parts of one field."""
    freq = np.fft.fftfreq(n, DOMAIN_KM / n)
    k = np.hypot(freq[None, :], freq[:, None])
    k[0, 0] = np.inf
    power = k[None] ** (-np.array(slopes)[:, None, None] / 2)
    fields = np.fft.ifft2(np.fft.fft2(rng.standard_normal((2, n, n))) * power).real
    fields = (fields - fields.mean(axis=(1, 2), keepdims=True)) / (fields.std(axis=(1, 2), keepdims=True) + 1e-12)
    return np.fft.fft2(fields[0] + 1j * fields[1])


def translated(spectrum: np.ndarray, shift_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two packed fields moved by shift_km (T × 2: x, y) at each frame, exactly and sub-pixel (Fourier
    shift theorem on the periodic domain): two float32 arrays T × n × n. What leaves one side re-enters the
    other only after 384 km, ≥ 4.5 h at these winds, so never within one sequence."""
    n = spectrum.shape[-1]
    freq = np.fft.fftfreq(n, DOMAIN_KM / n)  # cycles per km
    ramp_x = np.exp(-2j * np.pi * freq[None, None, :] * shift_km[:, 0, None, None]).astype(np.complex64)
    ramp_y = np.exp(-2j * np.pi * freq[None, :, None] * shift_km[:, 1, None, None]).astype(np.complex64)
    moved = np.fft.ifft2(spectrum.astype(np.complex64) * ramp_y * ramp_x)
    return moved.real, moved.imag


def mean_displacement(wind: SteeringWind, frame_times: np.ndarray) -> np.ndarray:
    """Displacement (T × 2, km) since frame 0 by the domain-averaged wind, which carries the rain fields."""
    points = np.linspace(0.1, 0.9, 5) * DOMAIN_KM
    gx, gy = np.meshgrid(points, points)
    dt = np.diff(frame_times)
    u, v = wind(gx[None], gy[None], (frame_times[:-1] + 0.5 * dt)[:, None, None])
    step = np.stack([u.mean(axis=(1, 2)), v.mean(axis=(1, 2))], -1) * dt[:, None]
    return np.concatenate([np.zeros((1, 2)), np.cumsum(step, axis=0)])


@dataclass
class Cells:
    birth: np.ndarray  # minutes since the first frame
    life: np.ndarray
    rise: np.ndarray  # fraction of the life spent growing
    peak: np.ndarray  # VIL pixel units
    size: np.ndarray  # mature core radius along the major axis (1 sigma), km
    aspect: np.ndarray  # major / minor axis
    tilt: np.ndarray  # angle of the major axis relative to the motion, rad
    start: np.ndarray  # K × 2 position (x, y), km, at moving_from
    moving_from: np.ndarray  # birth, or the parent's birth for a storm that split off
    deviation: np.ndarray  # K × 2 storm-relative motion, km/min
    deviate_from: np.ndarray  # when the deviant motion starts (a splitting storm turns when it splits)

    def __len__(self) -> int:
        return len(self.birth)

    def extended(self, other: Cells) -> Cells:
        return Cells(**{name: np.concatenate([getattr(self, name), getattr(other, name)])
                        for name in self.__dataclass_fields__})


def _draw_cells(rng: np.random.Generator, style: StormStyle, wind: SteeringWind) -> Cells:
    k = int(rng.integers(style.cells[0], style.cells[1] + 1))
    mean = np.array(wind(DOMAIN_KM / 2, DOMAIN_KM / 2, 120.0))  # typical motion over the event
    speed = np.linalg.norm(mean) + 1e-6
    across = np.array([-mean[1], mean[0]]) / speed  # unit vector left of the motion
    life = rng.uniform(*style.lifetime, k)
    peak = rng.uniform(*style.peak, k) * rng.uniform(0.75, 1.0, k) ** 2
    deviation = np.zeros((k, 2))
    if style.layout == "line":  # generations of cells along a line across the motion, moving with it
        birth = rng.uniform(-60, 90) + rng.integers(0, 3, k) * 45 + rng.normal(0, 10, k)
        along = rng.uniform(-0.4, 0.4, k) * DOMAIN_KM
        centre0 = rng.uniform(0.3, 0.7, 2) * DOMAIN_KM - mean * 120
        target_time = birth + life / 2
        target = centre0 + mean * target_time[:, None] + along[:, None] * across + rng.normal(0, 6, (k, 2))
    elif style.layout == "training":  # cells forming one after another at the same upwind spot
        birth = rng.uniform(-120, -40) + np.arange(k) * rng.uniform(18, 35) + rng.normal(0, 5, k)
        target_time = birth
        target = rng.uniform(0.25, 0.6, 2) * DOMAIN_KM - mean * 60 + rng.normal(0, 8, (k, 2))
    else:  # supercells (right-moving) and scattered cells
        birth = rng.uniform(-120, 200, k)
        target_time = birth + life / 2
        target = rng.uniform(0.15, 0.85, (k, 2)) * DOMAIN_KM
        if style.layout == "supercell":
            deviation = -across * speed * rng.uniform(0.2, 0.4, (k, 1))
    start = target - (mean + deviation) * (target_time - birth)[:, None]
    tilt = rng.normal(np.pi / 2 if style.layout == "line" else 0.0, 0.3, k)  # line segments lie along the line
    return Cells(birth=birth, life=life, rise=rng.uniform(0.3, 0.5, k), peak=peak, size=rng.uniform(10, 24, k),
                 aspect=rng.uniform(1.0, 2.0, k), tilt=tilt, start=start,
                 moving_from=birth.copy(), deviation=deviation, deviate_from=birth.copy())


def _with_splits(rng: np.random.Generator, cells: Cells, style: StormStyle) -> Cells:
    """Storms that split move with the wind until the split, then the parent turns right and a daughter
    (same start, mirrored deviation) turns left, so both share one track up to the split."""
    splitting = np.flatnonzero(rng.random(len(cells)) < style.split_prob)
    if splitting.size == 0:
        return cells
    when = cells.birth[splitting] + cells.life[splitting] * rng.uniform(0.3, 0.55, splitting.size)
    cells.deviate_from[splitting] = when
    m, remaining = splitting.size, cells.birth[splitting] + cells.life[splitting] - when
    return cells.extended(Cells(
        birth=when, life=np.maximum(remaining * rng.uniform(0.6, 1.0, m), 30.0), rise=rng.uniform(0.15, 0.3, m),
        peak=cells.peak[splitting] * rng.uniform(0.6, 0.9, m), size=cells.size[splitting] * 0.8,
        aspect=cells.aspect[splitting], tilt=cells.tilt[splitting], start=cells.start[splitting],
        moving_from=cells.moving_from[splitting], deviation=-cells.deviation[splitting], deviate_from=when))


def _track(cells: Cells, wind: SteeringWind, frame_times: np.ndarray, step: float = 10.0) -> np.ndarray:
    """Positions at the frames (T × K × 2): Euler steps through the wind, interpolated linearly to frames."""
    t0 = step * np.floor(max(min(cells.moving_from.min(initial=0.0), 0.0), -300.0) / step)
    times = np.arange(t0, frame_times[-1] + step, step)
    position = np.zeros((len(times), len(cells), 2))
    position[0] = cells.start
    for j in range(1, len(times)):
        t = times[j - 1]
        u, v = wind(position[j - 1, :, 0], position[j - 1, :, 1], t)
        deviating, moving = t >= cells.deviate_from, (t >= cells.moving_from) * step
        position[j, :, 0] = position[j - 1, :, 0] + (u + cells.deviation[:, 0] * deviating) * moving
        position[j, :, 1] = position[j - 1, :, 1] + (v + cells.deviation[:, 1] * deviating) * moving
    where = (frame_times - t0) / step
    lower = np.minimum(where.astype(int), len(times) - 2)
    frac = (where - lower)[:, None, None]
    return position[lower] * (1 - frac) + position[lower + 1] * frac


def _envelope(cells: Cells, frame_times: np.ndarray) -> np.ndarray:
    """Life cycle T × K: smooth growth to 1 over `rise` of the life, then slower decay to 0."""
    phase = (frame_times[:, None] - cells.birth) / cells.life
    growing = np.sin(np.pi / 2 * np.clip(phase / cells.rise, 0, 1)) ** 2
    decaying = np.sin(np.pi / 2 * np.clip((1 - phase) / (1 - cells.rise), 0, 1)) ** 2
    return np.where(phase < cells.rise, growing, decaying) * ((phase >= 0) & (phase <= 1))


def _render_cells(cells: Cells, position: np.ndarray, frame_times: np.ndarray, wind: SteeringWind,
                  n: int) -> np.ndarray:
    """Sum over cells of an elliptical Gaussian core plus a ~2.2× wider, weak shield: T × n × n (VIL units)."""
    envelope = _envelope(cells, frame_times)
    major = cells.size * (0.55 + 0.45 * envelope)  # cores widen as they mature
    minor = major / cells.aspect
    u, v = wind(position[..., 0], position[..., 1], frame_times[:, None])
    angle = np.arctan2(v, u) + cells.tilt
    cos, sin = np.cos(angle), np.sin(angle)
    # q = A dx² + 2B dx dy + C dy² is the squared distance in units of the ellipse's axes
    coef_a = (cos / major) ** 2 + (sin / minor) ** 2
    coef_b = cos * sin * (1 / major**2 - 1 / minor**2)
    coef_c = (sin / major) ** 2 + (cos / minor) ** 2
    centres = ((np.arange(n) + 0.5) * DOMAIN_KM / n).astype(np.float32)
    inside = np.all((position > -5 * major[..., None]) & (position < DOMAIN_KM + 5 * major[..., None]), -1)
    field = np.zeros((len(frame_times), n, n), np.float32)
    for k in range(len(cells)):
        frames = np.flatnonzero((envelope[:, k] > 1e-3) & inside[:, k])
        if frames.size == 0:
            continue
        per_frame = [x[frames, k].astype(np.float32)[:, None, None] for x in (
            position[..., 0], position[..., 1], coef_a, coef_b, coef_c, cells.peak[k] * envelope)]
        x0, y0, a, b, c, amplitude = per_frame
        dx, dy = centres[None, None, :] - x0, centres[None, :, None] - y0
        half_q = 0.5 * (a * dx * dx) + (0.5 * c * dy * dy) + (b * dx) * dy
        field[frames] += amplitude * (np.exp(-half_q) + 0.3 * np.exp(half_q * np.float32(-1 / 5)))
    return field


def synthesize_event(rng: np.random.Generator, style: StormStyle, n: int) -> np.ndarray:
    """One event: uint8 n × n × 49 (SEVIR's H × W × T)."""
    wind = SteeringWind(rng, style.speed)
    frame_times = np.arange(FRAMES, dtype=float) * FRAME_MINUTES
    cells = _with_splits(rng, _draw_cells(rng, style, wind), style)
    field = _render_cells(cells, _track(cells, wind, frame_times), frame_times, wind, n)
    cell_texture, light = translated(periodic_textures(rng, n, (2.8, 4.0)), mean_displacement(wind, frame_times))
    field *= np.clip(1 + 0.45 * cell_texture, 0.2, None)
    light -= rng.uniform(0.3, 1.0)  # threshold: the widespread field covers roughly 15–40% of the area
    waxing = 0.6 + 0.4 * np.sin(2 * np.pi * frame_times / rng.uniform(300, 700) + rng.uniform(0, 2 * np.pi))
    amplitude = (style.stratiform * rng.uniform(0.3, 1.0) * waxing[:, None, None]).astype(np.float32)
    field += amplitude * np.maximum(light, 0)
    # saturate smoothly above 180 toward 255, so overlapping cores do not pile up at the clip value
    knee = 180.0
    field = np.where(field > knee, knee + 75.0 * (1 - np.exp((knee - field) / 75.0)), field)
    field[field < 3.0] = 0.0  # below the detection floor: the Gaussian tails would otherwise cover everything
    vil = np.clip(np.rint(field), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(vil.transpose(1, 2, 0))
