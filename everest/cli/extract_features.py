"""Features of a trained encoder for your own videos: one .npy per video, plus an index.

    python launch/extract_features.py --checkpoint CKPT --videos PATH --output DIR [--config X.yaml]
        [--clips K | --window 64 --stride 32 | --window 2s --stride 1s] [--crops 3]
        [--pooling mean|tokens] [--batch_size 8] [--workers 2] [--precision auto] [section.key=value ...]
    deepspeed --num_gpus N launch/extract_features.py ...     # the videos are split over the ranks

CKPT: anything model.pretrained_path reads (DeepSpeed run folder or tag, exported .pt, official
VideoMAE/EVEREST .pth, Hugging Face VideoMAE folder), pretraining or fine-tuned; a run folder is
read at its best checkpoint, as launch/evaluate.py does (latest when none was ranked). PATH: a folder
(searched recursively), a glob ('clips/*.mp4', quoted), one video, an annotation/list file of
`path [label]` lines (relative to --root, default the list's folder) or a prepared dataset.

The config gives the clip recipe (training.num_frames, frames_to_sample, temporal_stride,
frame_selection, model.input_size, data.normalize_*); without --config, frames and size are the
checkpoint's. MCM at inference: model.mcm=true model.mcm_ratio=0.4 (keeps the 60 % most-moving
tokens: faster, features close to the full ones).

Outputs in DIR: <name>.npy per video ([windows, D], or [windows, tokens, D] with --pooling
tokens; <name>.kept.npy then holds the MCM-kept token indices), <name>.windows.json (each
window's start/end seconds and frame indices), index.csv (path, file, windows, times, ...),
skipped.csv (videos that could not be read, with the reason), extraction.json (the run's
counts and throughput), extraction_settings.json. Re-running skips the videos already done;
other settings into the same DIR are refused; Ctrl-C keeps what is written (exit 130). Exit
status 0 when every video is indexed, 1 when some were skipped, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from everest.cli.common import exit_on_user_error
from everest.cli.video_options import check_counts, chosen_checkpoint, video_parser
from everest.config import ConfigError, resolve_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = video_parser(__doc__, "checkpoint file or folder (any supported format)", "clips per encoder forward", 8)
    parser.add_argument("--output", required=True, help="folder for the features and index.csv")
    parser.add_argument("--clips", type=int, default=None, help="K windows spread evenly over each video")
    parser.add_argument("--window", default=None, help="sliding window length: frames ('64') or seconds ('2s')")
    parser.add_argument("--stride", default=None, help="sliding window step (default: the window length)")
    parser.add_argument("--crops", type=int, default=1, help="spatial crops per window, averaged (default 1)")
    parser.add_argument("--pooling", default="mean", choices=["mean", "tokens"])
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: bf16 autocast on CUDA, fp32 on CPU",
    )
    parser.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace):
    """Everything checkable without torch: the sampling, the config, the paths."""
    from everest.config import load_config
    from everest.inference.sampling import Sampling, Span

    try:
        sampling = Sampling(
            args.clips,
            Span.parse(args.window) if args.window else None,
            Span.parse(args.stride) if args.stride else None,
            args.crops,
        )
    except ValueError as err:
        raise ConfigError(f"--clips/--window/--stride/--crops: {err}") from None
    if args.pooling == "tokens" and args.crops != 1:
        raise ConfigError("--pooling tokens takes one crop per window (--crops 1)")
    check_counts(args.batch_size, args.workers)
    if args.config:
        args.config = str(resolve_path(args.config))
    load_config(args.config, args.overrides)  # a typo fails here, before the checkpoint is read
    args.checkpoint = chosen_checkpoint(args.checkpoint)
    return sampling


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sampling = check_args(args)

    from everest.engine import distributed  # first of the heavy imports: selects DeepSpeed's accelerator

    # isort: split
    from everest.cli.video_options import exit_on_signal_with
    from everest.data.annotations import AnnotationError
    from everest.inference.encoder import load_feature_encoder
    from everest.inference.extract import INDEX_FILE, extract_to_folder

    encoder = load_feature_encoder(args.checkpoint, args.config, args.overrides)
    exit_on_signal_with(f"the videos already written stay in {args.output}; the same command continues")
    ranks = int(os.environ.get("WORLD_SIZE", "1")) > 1
    dist_info = distributed.init_distributed(args.device) if ranks else None
    device = dist_info.device if dist_info else distributed.choose_device(args.device)
    try:
        report = extract_to_folder(
            encoder.to(device),
            args.videos,
            args.output,
            sampling,
            checkpoint=args.checkpoint,
            root=args.root,
            pooling=args.pooling,
            batch_size=args.batch_size,
            workers=args.workers,
            precision=args.precision,
            progress=not args.no_progress,
        )
    except AnnotationError as err:
        raise ConfigError(str(err)) from None
    finally:
        distributed.shutdown()
    if report is None:
        return 0
    out = Path(args.output)
    print(
        f"{report['videos']} videos: {report['written']} written, {report['already_done']} already done, "
        f"{len(report['skipped'])} skipped; {report['windows']} windows ({report['clips']} clips) in "
        f"{report['seconds']:.1f} s on {report['ranks']} rank(s): {report['videos_per_s']:.2f} videos/s, "
        f"{report['clips_per_s']:.2f} clips/s; index {out / INDEX_FILE} ({report['indexed']} videos)",
        flush=True,
    )
    for s in report["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']}", flush=True)
    return 1 if report["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
