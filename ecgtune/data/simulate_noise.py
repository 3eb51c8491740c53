"""Recording noise for simulated ECGs: baseline wander, mains, muscle (EMG), electrode motion.

Noise arises at the electrodes, not in the leads: it is drawn for the nine electrodes RA, LA, LL,
V1-V6 and combined as the leads are (I = LA - RA, II = LL - RA, Vi = Vi - (RA + LA + LL) / 3,
Wilson's central terminal), so III = II - I holds for the noise too and noise is correlated
across leads the way real noise is. Levels below are the RMS (EMG) or amplitude (others) of one
electrode's noise; a limb lead carries about sqrt(2) times that.

Per ECG, each level is drawn log-uniform within its preset's range: some records are clean, some
noisy, as in any clinical set. The levels are approximations, not fitted to PTB-XL: PTB-XL's own
annotations flag baseline drift, static noise, burst noise and electrode problems in roughly 7 %,
15 %, 3 % and 0.1 % of its ECGs (Wagner et al., Sci Data 7:154, 2020; quoted from memory, approx.).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgtune.targets import N_SAMPLES, SAMPLING_RATE_HZ

ELECTRODES: tuple[str, ...] = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")
# Electrodes (9) -> leads I, II, V1-V6 (8).
ELECTRODE_TO_LEADS = np.zeros((8, 9), np.float32)
ELECTRODE_TO_LEADS[0, [0, 1]] = (-1, 1)  # I = LA - RA
ELECTRODE_TO_LEADS[1, [0, 2]] = (-1, 1)  # II = LL - RA
ELECTRODE_TO_LEADS[2:, :3] = -1 / 3  # Vi - Wilson's central terminal
ELECTRODE_TO_LEADS[2:, 3:] = np.eye(6)
_T_S = np.arange(N_SAMPLES) / SAMPLING_RATE_HZ  # (5000,) s
MOTION_SAMPLES = 3 * SAMPLING_RATE_HZ  # an electrode-motion event lasts at most 3 s


@dataclass(frozen=True)
class NoiseLevel:
    """Per-ECG noise ranges, mV (each drawn log-uniform in [lo, hi] per ECG; (0, 0) = none).

    wander_mv: baseline wander amplitude (respiration 0.15-0.35 Hz plus slower drifts).
    mains_mv: mains interference amplitude at `mains_hz` (with a 3rd harmonic at 1/4 of it).
    emg_mv: muscle noise RMS, broadband (peak near 125 Hz).
    motion_per_ecg: expected electrode-motion events per 10 s (a jump that decays over 0.15-0.8 s).
    motion_mv: their amplitude.
    """

    name: str
    wander_mv: tuple[float, float]
    mains_mv: tuple[float, float]
    emg_mv: tuple[float, float]
    motion_per_ecg: float
    motion_mv: tuple[float, float]
    mains_hz: float = 50.0  # PTB-XL was recorded in Germany

    @property
    def is_noisy(self) -> bool:
        ranges = (
            self.wander_mv,
            self.mains_mv,
            self.emg_mv,
            self.motion_mv if self.motion_per_ecg > 0 else (0, 0),
        )
        return any(hi > 0 for _, hi in ranges)

    def describe(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


NOISE_LEVELS: dict[str, NoiseLevel] = {
    "clean": NoiseLevel("clean", (0, 0), (0, 0), (0, 0), 0.0, (0, 0)),
    "low": NoiseLevel("low", (0.01, 0.05), (0.0005, 0.003), (0.002, 0.006), 0.0, (0, 0)),
    "realistic": NoiseLevel("realistic", (0.02, 0.25), (0.001, 0.02), (0.003, 0.025), 0.15, (0.1, 1.0)),
    "high": NoiseLevel("high", (0.1, 0.6), (0.01, 0.08), (0.02, 0.08), 1.0, (0.2, 2.0)),
}


def noise_level(level: str | NoiseLevel) -> NoiseLevel:
    """A `NoiseLevel` from a preset name (or passed through); ValueError naming the presets."""
    if isinstance(level, NoiseLevel):
        return level
    if level not in NOISE_LEVELS:
        raise ValueError(f"unknown noise level {level!r}; allowed: {list(NOISE_LEVELS)}")
    return NOISE_LEVELS[level]


def _levels(rng: np.random.Generator, lo_hi: tuple[float, float], size) -> np.ndarray | None:
    lo, hi = lo_hi
    if hi <= 0:
        return None
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def electrode_noise(n: int, level: NoiseLevel, rng: np.random.Generator) -> np.ndarray | None:
    """Noise at the 9 `ELECTRODES`: float32 mV (n, 9, 5000), or None for a level without noise."""
    if not level.is_noisy:
        return None
    emg = _levels(rng, level.emg_mv, (n, 1, 1))
    if emg is not None:
        # w[t] - w[t-2] of white noise: zero at 0 Hz and 250 Hz, peak at 125 Hz, like surface EMG.
        # w is uniform (variance 1/12, so the difference has 1/6): 4x cheaper to draw than normal
        # noise, and after the filter and the electrode sums of the leads it is close to normal.
        # Electrodes differ (limbs tremble more than the chest).
        w = rng.random((n, 9, N_SAMPLES + 2), dtype=np.float32)
        scale = (emg * rng.uniform(0.3, 1.0, (n, 9, 1)) * np.sqrt(6.0)).astype(np.float32)
        out = (w[..., 2:] - w[..., :-2]) * scale  # (n, 9, 5000)
    else:
        out = np.zeros((n, 9, N_SAMPLES), np.float32)
    wander = _levels(rng, level.wander_mv, (n, 1, 1))
    if wander is not None:
        # Three slow sinusoids per ECG (respiration and two drifts), mixed differently per electrode.
        hz = np.stack([rng.uniform(0.15, 0.35, n), rng.uniform(0.02, 0.1, n), rng.uniform(0.05, 0.5, n)], 1)
        phase = 2 * np.pi * hz[..., None] * _T_S + rng.uniform(0, 2 * np.pi, (n, 3, 1))  # (n, 3, T)
        mix = rng.normal(0, 1, (n, 9, 3)) * wander  # (n, 9, 3)
        out += np.matmul(mix.astype(np.float32), np.sin(phase.astype(np.float32)))
    mains = _levels(rng, level.mains_mv, (n, 1, 1))
    if mains is not None:
        # What reaches the amplifier is the electrode-impedance-dependent part: per electrode its own
        # amplitude and phase (sin/cos weights), a 3rd harmonic at a quarter of the amplitude.
        f = level.mains_hz
        arg = 2 * np.pi * f * _T_S
        basis = np.stack([np.sin(arg), np.cos(arg), np.sin(3 * arg), np.cos(3 * arg)]).astype(np.float32)
        weights = rng.normal(0, 1, (n, 9, 4)) * mains * np.array([1, 1, 0.25, 0.25]) / np.sqrt(2)
        out += np.matmul(weights.astype(np.float32), basis)  # (n, 9, 4) @ (4, T)
    motion = _levels(rng, level.motion_mv, n)
    if motion is not None and level.motion_per_ecg > 0:
        _add_motion(out, motion, level.motion_per_ecg, rng)
    return out


def _add_motion(out: np.ndarray, amplitude: np.ndarray, rate: float, rng: np.random.Generator) -> None:
    """Electrode motion: at random times an electrode jumps (5-40 ms rise) and recovers (150-800 ms)."""
    n = out.shape[0]
    count = np.minimum(rng.poisson(rate, n), 3)
    t = np.arange(MOTION_SAMPLES) / SAMPLING_RATE_HZ * 1000  # (L,) ms
    taper = np.minimum(1.0, (MOTION_SAMPLES - np.arange(MOTION_SAMPLES)) / (0.2 * MOTION_SAMPLES))
    for event in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > event)
        m = len(rows)
        rise, decay = rng.uniform(5, 40, (m, 1)), rng.uniform(150, 800, (m, 1))
        sign = rng.choice([-1.0, 1.0], (m, 1))
        shape = sign * amplitude[rows, None] * (1 - np.exp(-t / rise)) * np.exp(-t / decay) * taper  # (m, L)
        start = rng.integers(0, N_SAMPLES, m)
        electrode = rng.integers(0, 9, m)
        idx = start[:, None] + np.arange(MOTION_SAMPLES)  # (m, L)
        keep = idx < N_SAMPLES
        r = np.broadcast_to(rows[:, None], idx.shape)[keep]
        e = np.broadcast_to(electrode[:, None], idx.shape)[keep]
        np.add.at(out, (r, e, idx[keep]), shape[keep].astype(np.float32))


def add_noise(x8: np.ndarray, level: NoiseLevel, rng: np.random.Generator) -> np.ndarray:
    """Add `level`'s noise to ECGs `x8`, float32 mV (n, 8, 5000), leads I, II, V1-V6, in place; return it."""
    if x8.ndim != 3 or x8.shape[1:] != (8, N_SAMPLES):
        raise ValueError(f"x8 must be (n, 8, {N_SAMPLES}) mV, leads I, II, V1-V6; got {x8.shape}")
    noise = electrode_noise(len(x8), level, rng)
    if noise is not None:
        x8 += np.matmul(ELECTRODE_TO_LEADS, noise)  # (8, 9) @ (n, 9, T) -> (n, 8, T)
    return x8
