"""Run a fine-tuned model on video files: per-video class and top-5 with probabilities
(classification) or values (regression), multi-view averaged as launch/evaluate.py does.

    python launch/predict.py --checkpoint FINETUNED --videos PATH [--output FILE] [--config X.yaml]
        [--class_names names.txt] [--batch_size 4] [--workers 0] [section.key=value ...]
    deepspeed --num_gpus N launch/predict.py ...     # the videos are split over the ranks

FINETUNED: any checkpoint format; a run folder is scored at its best checkpoint, as
launch/evaluate.py does. PATH: a folder (recursive), a glob, one video, an annotation/list file (its labels, when
present, fill the label column; relative paths start at --root, default the list's folder) or a
prepared dataset. Views per video: training.test_num_segment x training.test_num_crop of the
config; MCM as the config says (model.mcm, model.mcm_ratio, model.mcm_at_test). Without
--config the frames, size and task come from the checkpoint and the rest from the defaults:
pass the config the model was fine-tuned with to get the same clips as its evaluation.

Output: CSV keyed by the video path (to FILE, or to stdout without --output). Classification
columns: path, label, prediction, class, confidence, top5, top5_probs, top5_classes; class
names come from --class_names (one per line, or `index name` lines), a Hugging Face
checkpoint's id2label, or the built-in data. Regression: path, [label0..], prediction0...
Videos that cannot be read are named on stderr; exit status 1 then, 2 for a usage error.
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
    parser = video_parser(__doc__, "fine-tuned checkpoint (any supported format)", "videos per forward", 4)
    parser.add_argument("--output", default=None, help="CSV file to write (default: print the CSV)")
    parser.add_argument("--class_names", "--class-names", default=None, help="file of class names")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from everest.config import load_config

    if args.config:
        args.config = str(resolve_path(args.config))
    load_config(args.config, args.overrides)  # a typo fails here, before anything heavy
    check_counts(args.batch_size, args.workers)
    if args.class_names and not Path(args.class_names).is_file():
        raise FileNotFoundError(f"--class_names {args.class_names}: no such file")
    args.checkpoint = chosen_checkpoint(args.checkpoint)

    from everest.engine import distributed  # first of the heavy imports: selects DeepSpeed's accelerator

    # isort: split
    from everest.data.annotations import AnnotationError
    from everest.engine.distributed import gather_objects
    from everest.inference.encoder import inference_config
    from everest.inference.predict import class_names, csv_text, predict_sources, prediction_rows
    from everest.inference.sources import find_videos
    from everest.models.weights import load_classifier, read_weights
    from everest.tasks.finetune import FinetuneObjective

    try:
        sources = find_videos(args.videos, args.root)
    except AnnotationError as err:
        raise ConfigError(str(err)) from None
    loaded = read_weights(args.checkpoint)
    cfg = inference_config(args.config, args.overrides, loaded)
    if args.config is None and loaded.meta.get("task_type"):
        cfg.model.task_type = loaded.meta["task_type"]
    model = load_classifier(
        loaded,
        num_frames=cfg.training.num_frames,
        input_size=cfg.model.input_size,
        attention_backend=cfg.model.attention_backend,
    )
    try:
        names = (
            class_names(cfg, loaded, args.class_names, model.head.out_features)
            if cfg.model.task_type == "classification"
            else None
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None

    dist_info = distributed.init_distributed(args.device) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
    device = dist_info.device if dist_info else distributed.choose_device(args.device)
    mine = sources if sources[0].shard is not None else sources[rank::world]  # litdata shards by rank itself
    try:
        objective = FinetuneObjective(model, cfg).to(device)
        parts = gather_objects(predict_sources(objective, mine, cfg, device, args.batch_size, args.workers))
    finally:
        distributed.shutdown()
    if rank != 0:
        return 0
    predictions = {k: v for part, _ in parts for k, v in part.items()}
    failed = {k: v for _, part in parts for k, v in part.items()}
    by_order = {s.order: s for s in sources}
    text = csv_text(*prediction_rows(predictions, by_order, cfg.model.task_type, names))
    views = f"{cfg.training.test_num_segment}x{cfg.training.test_num_crop} views"
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"{len(predictions)} videos ({views} each) -> {args.output}; {len(failed)} skipped", flush=True)
    else:
        sys.stdout.write(text)
    for order, reason in sorted(failed.items()):
        print(f"skipped {by_order[order].path}: {reason}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
