"""The built-in "objects" collection: a shaded shape moving over a smooth, textured background.

The background is a smooth colour texture (three low-frequency sinusoids of random orientation,
wavelength 32-96 px at 64x64, and phase); the object is a disc, a square, a triangle or a cross
of random colour, size and small tilt, shaded by a linear ramp of random direction, and moves
along one axis (horizontal or vertical), bouncing off the frame's edges. Eight classes cross the
shape with the motion's axis, so a label needs appearance and motion together; everything else
(colours, textures, size, tilt, shading, start, speed, direction along the axis) is drawn at
random per video. Almost every 8x8 patch holds a ramp or an edge rather than a flat region, so
per-patch normalised targets (the paper's default) are mostly structure, not amplified noise.

Every video is drawn from its own generator keyed by (seed, split, index): the first n videos of
a larger pool are the same videos, so the small labelled train split is part of the unlabeled
pool that pretraining reads, while validation and test videos are never in it.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("disc", "square", "triangle", "cross")
CLASSES = tuple(f"{shape}-{axis}" for axis in ("horizontal", "vertical") for shape in SHAPES)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SPEED = (0.5, 1.0)  # pixels per frame at 64x64 (clips take every 2nd frame); scaled with the size
WAVELENGTH = (32.0, 96.0)  # background sinusoids, pixels at 64x64
RADIUS = (0.16, 0.24)  # the shape's half-width, as a share of the frame
TILT = 0.25  # radians either way


def smooth_texture(size: int, rng: np.random.Generator, waves: int = 3) -> np.ndarray:
    """[size, size] sum of `waves` low-frequency sinusoids, scaled to unit std."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    texture = np.zeros((size, size), np.float32)
    for _ in range(waves):
        theta, k = rng.uniform(0, np.pi), 2 * np.pi / (rng.uniform(*WAVELENGTH) * size / 64)
        texture += np.cos(k * (np.cos(theta) * xs + np.sin(theta) * ys) + rng.uniform(0, 2 * np.pi))
    return texture / (texture.std() + 1e-8)


def shape_mask(shape: int, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of SHAPES[shape] of half-width `radius` in coordinates relative to its centre."""
    ay, ax = np.abs(dy), np.abs(dx)
    if SHAPES[shape] == "disc":
        return dy**2 + dx**2 <= radius**2
    if SHAPES[shape] == "square":
        return np.maximum(ay, ax) <= radius * 0.85
    if SHAPES[shape] == "triangle":  # apex up, base at +radius
        return (dy <= radius * 0.8) & (ax <= (dy + radius) * 0.6)
    arm = radius * 0.38
    return ((ay <= arm) & (ax <= radius)) | ((ax <= arm) & (ay <= radius))


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low
    phase = np.mod(position - low, 2 * span)
    return low + np.where(phase > span, 2 * span - phase, phase)


def render_objects(label: int, rng: np.random.Generator, size: int = 64, frames: int = 48) -> np.ndarray:
    """uint8 [frames, size, size, 3] of class `label` (see CLASSES)."""
    shape, vertical = label % len(SHAPES), label >= len(SHAPES)
    background = rng.uniform(70, 185, 3) + 40.0 * smooth_texture(size, rng)[..., None] * rng.uniform(0.4, 1.0, 3)
    colour = rng.uniform(30, 225, 3)
    radius = size * rng.uniform(*RADIUS)
    tilt = rng.uniform(-TILT, TILT)
    shade_angle, shade = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 2.5) * 64 / size  # levels per pixel
    start = rng.uniform(radius, size - radius, 2)
    speed = rng.uniform(*SPEED) * size / 64 * rng.choice([-1.0, 1.0])
    step = np.array([speed, 0.0]) if vertical else np.array([0.0, speed])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        cy, cx = _bounce(start + t * step, radius, size - radius)
        dy, dx = ys - cy, xs - cx
        ry, rx = np.cos(tilt) * dy - np.sin(tilt) * dx, np.sin(tilt) * dy + np.cos(tilt) * dx
        inside = shape_mask(shape, ry, rx, radius)
        ramp = shade * (np.cos(shade_angle) * dx + np.sin(shade_angle) * dy)  # the shading rides on the shape
        frame = np.where(inside[..., None], colour + ramp[..., None], background) + rng.normal(0, 1.0, (size, size, 3))
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one video: the same video whatever the size of its split."""
    return np.random.default_rng([seed, SPLIT_IDS[split], index])
