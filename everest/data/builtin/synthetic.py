"""The built-in data: short videos of one textured shape moving over a textured, static
background, labelled by their motion.

Classes (4) cross the motion's axis with its speed: horizontal-slow, horizontal-fast,
vertical-slow, vertical-fast. The direction along the axis (left/right, up/down) and the
shape (circle, square, triangle) vary within every class, so only motion tells classes apart,
and a horizontal flip never changes a label. The regression target is the speed in pixels per
frame. Everything but the moving shape is static apart from a little sensor noise, which is the
case motion-centric token selection is made for.

`generate_collection` writes real mp4 files and annotation CSVs; `ensure_builtin_dataset`
prepares them with the same pipeline a user runs (everest.data.prepare), once, under a file lock
so that several ranks can ask at the same time.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image

from everest.data.annotations import write_annotations

CLASSES = ("horizontal-slow", "horizontal-fast", "vertical-slow", "vertical-fast")
SHAPES = ("circle", "square", "triangle")
SLOW, FAST = (0.6, 1.2), (2.2, 3.2)  # pixels per frame at 64x64; scaled with the frame size
Labels = Literal["motion", "speed"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and count of the built-in collection (a few seconds of 64x64 video per clip)."""

    train_videos: int = 48
    val_videos: int = 48
    test_videos: int = 48
    size: int = 64
    frames: int = 48
    fps: int = 12
    seed: int = 0
    version: int = 2  # bumped when the rendering changes, so that old collections are rebuilt
    kind: str = "motion"  # "motion" (this module's shapes), "objects" or "digits" (everest.data.builtin.*)
    digits: int = 1  # digits per video in the "digits" collection (2: a distractor of another class)
    probe_videos: int = 0  # the first train videos, also prepared as the representation probe's split


@dataclass(frozen=True)
class Motion:
    """What moves in one video: the class label, speed (px/frame), axis, sign and shape."""

    label: int
    speed: float
    vertical: bool
    sign: int
    shape: str

    @classmethod
    def draw(cls, label: int, size: int, rng: np.random.Generator) -> Motion:
        low, high = FAST if label % 2 else SLOW
        return cls(
            label,
            float(rng.uniform(low, high)) * size / 64,
            label >= 2,
            int(rng.choice([-1, 1])),
            str(rng.choice(SHAPES)),
        )


def _smooth_texture(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect positions into [low, high], like a shape bouncing off the frame edges."""
    span = high - low
    phase = np.mod(position - low, 2 * span)
    return low + np.where(phase > span, 2 * span - phase, phase)


def render(motion: Motion, size: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [frames, size, size, 3]: the moving shape over a static textured background.

    The shape bounces off the edges (it stays whole and in view) and carries a high-contrast
    checkerboard: unlike stripes, a checkerboard moving sideways never looks like one moving up
    or down, so its motion is unambiguous at every patch (no barber-pole illusion)."""
    background = 0.7 * _smooth_texture(size, 6, rng) + 0.3 * _smooth_texture(size, 16, rng)
    dark = rng.uniform(0, 60, 3)
    colors = np.stack([dark, 255 - rng.uniform(0, 60, 3)])
    radius = size * rng.uniform(0.12, 0.18)
    start = rng.uniform(radius, size - radius, 2)
    step = (
        np.array([0.0, motion.sign * motion.speed])
        if not motion.vertical
        else np.array([motion.sign * motion.speed, 0.0])
    )
    cell = max(radius / 2, 1)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        cy, cx = _bounce(start + t * step, radius, size - radius)
        dy, dx = ys - cy, xs - cx
        if motion.shape == "circle":
            inside = dx**2 + dy**2 <= radius**2
        elif motion.shape == "square":
            inside = (np.abs(dx) <= 0.85 * radius) & (np.abs(dy) <= 0.85 * radius)
        else:
            inside = (np.abs(dy) <= 0.8 * radius) & (np.abs(dx) <= 0.6 * (dy + 0.8 * radius))
        checker = ((np.floor(dx / cell) + np.floor(dy / cell)) % 2).astype(int)
        frame = np.where(inside[..., None], colors[checker], background)
        frame += rng.normal(0, 2.0, frame.shape)  # sensor noise: the background is only mostly static
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def write_video(path: str | Path, video: np.ndarray, fps: int, lossless: bool = False) -> None:
    """Write uint8 [T, H, W, 3] frames as an H.264 mp4; `lossless`: RGB at qp 0 (libx264rgb),
    so that every decoder returns exactly these frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        stream.options = {"qp": "0", "preset": "veryfast"} if lossless else {"crf": "18", "preset": "veryfast"}
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def _generate_objects(out_dir: Path, spec: SyntheticSpec) -> Path:
    """The "objects" collection (everest.data.builtin.objects): one generator per video, so that a
    smaller collection is the first videos of a larger one with the same seed."""
    from everest.data.builtin.objects import CLASSES as OBJECT_CLASSES
    from everest.data.builtin.objects import render_objects, video_rng

    for split, count in zip(SPLITS, (spec.train_videos, spec.val_videos, spec.test_videos)):
        folder = out_dir / "videos" / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            label = i % len(OBJECT_CLASSES)
            name = f"{split}/{split}_{i:05d}_{OBJECT_CLASSES[label]}.mp4"
            write_video(
                out_dir / "videos" / name,
                render_objects(label, video_rng(spec.seed, split, i), spec.size, spec.frames),
                spec.fps,
            )
            rows.append((name, label))
        write_annotations(out_dir / f"{split}_motion.csv", rows)
    return out_dir


def _generate_digits(out_dir: Path, spec: SyntheticSpec) -> Path:
    """The "digits" collection (everest.data.builtin.digits), written losslessly: generating it
    twice gives the same decoded frames, bit for bit."""
    from everest.data.builtin.digits import CLASSES as DIGIT_CLASSES
    from everest.data.builtin.digits import render_digits

    for split, count in zip(SPLITS, (spec.train_videos, spec.val_videos, spec.test_videos)):
        (out_dir / "videos" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            video, label = render_digits(spec.seed, split, i, spec.size, spec.frames, spec.digits)
            name = f"{split}/{split}_{i:05d}_{DIGIT_CLASSES[label]}.mp4"
            write_video(out_dir / "videos" / name, video, spec.fps, lossless=True)
            rows.append((name, label))
        write_annotations(out_dir / f"{split}_motion.csv", rows)
    return out_dir


def _generate_motion(out_dir: Path, spec: SyntheticSpec) -> Path:
    """The "motion" collection (this module's shapes), with motion-class and speed labels."""
    rng = np.random.default_rng(spec.seed)
    for split, count in zip(SPLITS, (spec.train_videos, spec.val_videos, spec.test_videos)):
        folder = out_dir / "videos" / split
        folder.mkdir(parents=True, exist_ok=True)
        rows_motion, rows_speed = [], []
        for i in range(count):
            motion = Motion.draw(i % len(CLASSES), spec.size, rng)
            name = f"{split}/{split}_{i:04d}_{CLASSES[motion.label]}.mp4"
            write_video(out_dir / "videos" / name, render(motion, spec.size, spec.frames, rng), spec.fps)
            rows_motion.append((name, motion.label))
            rows_speed.append((name, motion.speed))
        write_annotations(out_dir / f"{split}_motion.csv", rows_motion)
        write_annotations(out_dir / f"{split}_speed.csv", rows_speed)
    return out_dir


def _write_probe_split(out_dir: Path, spec: SyntheticSpec) -> None:
    """probe_{labels}.csv: the first `spec.probe_videos` train videos (every class alike, since
    video i shows class i mod C), the labelled subset the pretraining probe trains on."""
    for train_csv in sorted(out_dir.glob("train_*.csv")):
        lines = train_csv.read_text().splitlines()[: spec.probe_videos]
        (out_dir / train_csv.name.replace("train_", "probe_", 1)).write_text("".join(f"{line}\n" for line in lines))


GENERATORS = {"motion": _generate_motion, "objects": _generate_objects, "digits": _generate_digits}


def generate_collection(out_dir: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write videos/{train,val,test}/*.mp4, {split}_{motion,speed}.csv and probe_*.csv under
    `out_dir` ("objects" and "digits" collections have class labels only, in {split}_motion.csv)."""
    out_dir = Path(out_dir)
    if spec.kind not in GENERATORS:
        raise ValueError(f"unknown built-in collection {spec.kind!r}; choose one of {', '.join(GENERATORS)}")
    GENERATORS[spec.kind](out_dir, spec)
    _write_probe_split(out_dir, spec)
    return out_dir


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_builtin_dataset(
    data_cfg, labels: Labels = "motion", workers: int | None = 2, lock_timeout_s: float = 1800
) -> Path:
    """The prepared built-in dataset for `data_cfg` (a DataConfig: synthetic_dir,
    synthetic_videos): a folder with train/, val/ and test/ shards (and probe/, the first
    synthetic_probe_videos train videos, when that is above 0). Generated and prepared
    on first use and reused afterwards; safe when several processes call it at once."""
    from filelock import FileLock

    from everest.data.codec import StorageSettings
    from everest.data.prepare import prepare_dataset

    if labels not in ("motion", "speed"):
        raise ValueError(f"labels must be 'motion' or 'speed'; got {labels!r}")
    kind = getattr(data_cfg, "synthetic_kind", "motion")
    if kind != "motion" and labels == "speed":
        raise ValueError(
            f"data.synthetic_kind={kind} has class labels only: use data.synthetic_kind=motion for the speed regression"
        )
    videos = int(data_cfg.synthetic_videos)
    if videos < 1:
        raise ValueError(f"data.synthetic_videos={videos} must be >= 1")
    # By default as many validation and test videos as training videos (4..96 each): accuracy on a
    # dozen videos moves in 8-point steps, too coarse to compare two runs. Validation picks the
    # best checkpoint; the test split, never looked at during training, is what a run reports.
    held_out = getattr(data_cfg, "synthetic_heldout", None) or min(max(4, videos), 96)
    probe = min(int(getattr(data_cfg, "synthetic_probe_videos", 0)), videos)
    if kind == "digits":  # Moving MNIST's 16 frames (clips take 8 at stride 2), stored losslessly
        spec = SyntheticSpec(
            train_videos=videos,
            val_videos=held_out,
            test_videos=held_out,
            frames=16,
            kind=kind,
            digits=int(getattr(data_cfg, "synthetic_digits", 1)),
            probe_videos=probe,
        )
    else:
        spec = SyntheticSpec(
            train_videos=videos, val_videos=held_out, test_videos=held_out, kind=kind, probe_videos=probe
        )
    storage = StorageSettings(lossless=True) if kind == "digits" else None
    root = Path(data_cfg.synthetic_dir).expanduser().resolve()
    shards = root / f"shards-{labels}"
    wanted = {"spec": asdict(spec), "labels": labels}
    if _read_json(shards / "READY.json") == wanted:
        return shards
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock", timeout=lock_timeout_s):
        if _read_json(shards / "READY.json") == wanted:  # another process built it meanwhile
            return shards
        if _read_json(root / "SPEC.json") != asdict(spec):
            shutil.rmtree(root, ignore_errors=True)
            print(f"everest: generating the built-in synthetic videos in {root} (first use)", flush=True)
            generate_collection(root, spec)
            (root / "SPEC.json").write_text(json.dumps(asdict(spec)))
        print(f"everest: preparing the built-in {labels} dataset in {shards}", flush=True)
        shutil.rmtree(shards, ignore_errors=True)
        for split in SPLITS + (("probe",) if spec.probe_videos else ()):
            prepare_dataset(
                root / "videos",
                shards / split,
                root / f"{split}_{labels}.csv",
                settings=storage,
                workers=workers,
                overwrite=True,
                min_frames=spec.frames,
                verbose=False,
            )
        (shards / "READY.json").write_text(json.dumps(wanted))
    return shards
