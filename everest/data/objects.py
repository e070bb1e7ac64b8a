"""The built-in "objects" collection: a textured disc moving over a textured, static background.

Texture is everywhere: the background is the sum of two sinusoidal gratings of random
orientation, wavelength (8-16 px at 64x64) and phase, and the disc carries a grating of its own
that rides on it. Eight classes cross the disc grating's orientation (0, 45, 90 or 135 degrees)
with the motion's axis (horizontal or vertical), so a label needs appearance and motion together;
colours, wavelengths, phases, position, speed and the direction along the axis are drawn at
random per video. Orientation classes are not invariant to a horizontal flip, so configs on this
collection turn flipping off.

Every video is drawn from its own generator keyed by (seed, split, index): the first n videos of
a larger pool are the same videos, so the small labelled train split is part of the unlabeled
pool that pretraining reads, while validation and test videos are never in it.
"""

from __future__ import annotations

import numpy as np

CLASSES = tuple(f"{angle}deg-{axis}" for axis in ("horizontal", "vertical") for angle in (0, 45, 90, 135))
ORIENTATIONS = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SPEED = (0.25, 0.75)  # pixels per frame at 64x64 (clips take every 2nd frame); scaled with the size
WAVELENGTH = (8.0, 16.0)  # pixels at 64x64


def grating(size: int, rng: np.random.Generator, theta: float, wavelength: float) -> np.ndarray:
    """[size, size] cos grating (unit amplitude) whose wave vector points along `theta`."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    k = 2 * np.pi / wavelength
    return np.cos(k * (np.cos(theta) * xs + np.sin(theta) * ys) + rng.uniform(0, 2 * np.pi))


def _unit(texture: np.ndarray) -> np.ndarray:
    return texture / (texture.std() + 1e-8)


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
    wavelength = lambda: rng.uniform(*WAVELENGTH) * size / 64  # noqa: E731
    background = _unit(grating(size, rng, rng.uniform(0, np.pi), wavelength())
                       + grating(size, rng, rng.uniform(0, np.pi), wavelength()))
    background = _colour(background, rng, 35.0)
    theta = ORIENTATIONS[orientation] + rng.normal(0, 0.05)
    disc = _colour(_unit(grating(wide, rng, theta, wavelength())), rng, 60.0)
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
        frame = np.where(inside[..., None], disc[ty, tx], background) + rng.normal(0, 1.0, (size, size, 3))
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one video: the same video whatever the size of its split."""
    return np.random.default_rng([seed, SPLIT_IDS[split], index])
