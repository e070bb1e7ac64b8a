"""The built-in "objects" collection: a textured disc moving over a textured, static background.

Texture is everywhere: the background is 1/f^1.6 noise (natural-image-like spectrum) and the disc
carries oriented 1/f noise attached to it (it moves with the disc). Eight classes cross the
disc texture's orientation (0, 45, 90 or 135 degrees) with the motion's axis (horizontal or
vertical), so a label needs appearance and motion together; colours, positions, speed, direction
along the axis and both textures are drawn at random per video. Orientation classes are not
invariant to a horizontal flip, so configs on this collection turn flipping off.

Every video is drawn from its own generator keyed by (seed, split, index): the first n videos of
a larger pool are the same videos, so the small labelled train split is part of the unlabeled
pool that pretraining reads, while validation and test videos are never in it.
"""

from __future__ import annotations

import numpy as np

CLASSES = tuple(f"{angle}deg-{axis}" for axis in ("horizontal", "vertical") for angle in (0, 45, 90, 135))
ORIENTATIONS = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SPEED = (1.0, 2.0)  # pixels per frame at 64x64; scaled with the frame size


def spectral_noise(size: int, rng: np.random.Generator, alpha: float, theta: float | None = None,
                   spread: float = 0.35) -> np.ndarray:
    """[size, size] Gaussian noise with a 1/f^alpha amplitude spectrum, zero mean and unit std.
    With `theta`, the energy is concentrated on wave vectors near that angle (stripes across it)."""
    fy = np.fft.fftfreq(size)[:, None] * size
    fx = np.fft.fftfreq(size)[None, :] * size
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0) ** alpha
    amplitude[0, 0] = 0.0
    if theta is not None:
        offset = np.angle(np.exp(2j * (np.arctan2(fy, fx) - theta))) / 2  # orientation difference
        amplitude = amplitude * np.exp(-0.5 * (offset / spread) ** 2)
    noise = rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))
    image = np.real(np.fft.ifft2(noise * amplitude))
    return (image - image.mean()) / (image.std() + 1e-8)


def _colour(texture: np.ndarray, rng: np.random.Generator, contrast: float) -> np.ndarray:
    base, tint = rng.uniform(60, 195, 3), rng.uniform(0.5, 1.0, 3)
    return base + contrast * texture[..., None] * tint


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low
    phase = np.mod(position - low, 2 * span)
    return low + np.where(phase > span, 2 * span - phase, phase)


def render_objects(label: int, rng: np.random.Generator, size: int = 64, frames: int = 48) -> np.ndarray:
    """uint8 [frames, size, size, 3] of class `label` (see CLASSES)."""
    orientation, vertical = label % 4, label >= 4
    wide = 2 * size
    background = _colour(spectral_noise(wide, rng, 1.6), rng, 40.0)[:size, :size]
    theta = ORIENTATIONS[orientation] + rng.normal(0, 0.08)
    disc = _colour(spectral_noise(wide, rng, 1.0, theta=theta), rng, 55.0)
    radius = size * rng.uniform(0.22, 0.30)
    start = rng.uniform(radius, size - radius, 2)
    speed = rng.uniform(*SPEED) * size / 64 * rng.choice([-1.0, 1.0])
    step = np.array([speed, 0.0]) if vertical else np.array([0.0, speed])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    offset = rng.integers(0, wide, 2)
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        cy, cx = _bounce(start + t * step, radius, size - radius)
        inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius ** 2
        ty = (np.round(ys - cy).astype(int) + offset[0]) % wide  # the texture rides on the disc
        tx = (np.round(xs - cx).astype(int) + offset[1]) % wide
        frame = np.where(inside[..., None], disc[ty, tx], background) + rng.normal(0, 2.0, (size, size, 3))
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one video: the same video whatever the size of its split."""
    return np.random.default_rng([seed, SPLIT_IDS[split], index])
