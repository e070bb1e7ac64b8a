"""Prepare a video collection into litdata shards for EVEREST.

    python launch/prepare_data.py --videos DIR --annotations FILE.csv --output OUT \
        [--short-side 256] [--workers N] [--overwrite]

Annotation lines are `path/to/video [label ...]` (comma or space separated; integer class
indices, float regression targets, or no label for pretraining). See everest/data/prepare.py.
"""

from __future__ import annotations

import argparse
import sys

from everest.data.annotations import AnnotationError
from everest.data.codec import StorageSettings
from everest.data.prepare import PrepareError, prepare_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare videos + annotations into litdata shards for EVEREST.")
    parser.add_argument("--videos", required=True, help="folder holding the videos")
    parser.add_argument(
        "--annotations",
        help="CSV of `path [label ...]` lines (paths relative to --videos); "
        "default: every video under --videos, unlabeled",
    )
    parser.add_argument("--output", required=True, help="output folder for the shards")
    defaults = StorageSettings()
    parser.add_argument(
        "--short-side",
        type=int,
        default=defaults.short_side,
        help="downscale videos whose short side is larger (never upscales)",
    )
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--min-frames", type=int, default=16, help="skip videos with fewer frames")
    parser.add_argument("--crf", type=int, default=defaults.crf, help="x264 quality (lower: better, larger)")
    parser.add_argument("--gop", type=int, default=defaults.gop, help="frames between keyframes")
    parser.add_argument("--bframes", type=int, default=defaults.bframes, help="B-frames between reference frames")
    parser.add_argument("--preset", default=defaults.preset, help="x264 preset (speed vs size)")
    parser.add_argument("--chunk-bytes", default="64MB", help="litdata chunk size")
    args = parser.parse_args(argv)
    try:
        settings = StorageSettings(
            short_side=args.short_side, gop=args.gop, bframes=args.bframes, crf=args.crf, preset=args.preset
        )
        summary = prepare_dataset(
            args.videos,
            args.output,
            args.annotations,
            settings=settings,
            workers=args.workers,
            overwrite=args.overwrite,
            min_frames=args.min_frames,
            chunk_bytes=args.chunk_bytes,
        )
    except (AnnotationError, PrepareError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.report())
    return 0
