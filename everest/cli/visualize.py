"""Reconstruction pictures: what the model keeps, sees and rebuilds, clip by clip.

    python launch/visualize.py --config configs/pretrain/default_cpu.yaml \
        --checkpoint output/default/checkpoints --output_dir visualizations \
        [--num_samples 5] [--frames_to_show 8] [--seed S] [--split train|val] [key=value ...]
    python launch/visualize.py --config X.yaml [--checkpoint CKPT] --video a.mp4 [--video b.mp4 ...] --output_dir DIR

One labelled PNG per clip, one column per shown frame, rows: original | masked input (dropped
tokens dark, encoder-visible tokens as input, targets tinted red) | reconstruction (targets
predicted, visible as input) | motion-score heatmap, with a legend below. It is named
`video_{i}_reconstruction_grid.png`, or `video_{i}_selection_grid.png` when there is no
reconstruction row. Token selection
follows the config's model.mask_type (motion-centric, random or tube); the heatmap always shows
the motion score. The checkpoint may be any format fine-tuning reads (a DeepSpeed run folder, an
exported .pt, an official VideoMAE/EVEREST .pth, a Hugging Face folder). A checkpoint without a
decoder, or no checkpoint at all, gives the picture without the reconstruction row; with no
checkpoint the scores come from a freshly initialised patch embedding (a random projection of
each tubelet, so its score follows the pixel change).

--video draws real footage instead of the config's dataset: frames decoded with PyAV, the
config's frame sampling (frames_to_sample, temporal_stride, frame_selection), resized and
centre-cropped to model.input_size.
"""

from __future__ import annotations

import argparse
import copy
import sys
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from everest.cli.common import exit_on_user_error
from everest.config import Config, ConfigError, load_config, resolve_path

if TYPE_CHECKING:  # torch is imported once the arguments and the config are known to be valid
    import numpy as np
    import torch
    from torch import Tensor, nn

DEFAULT_CONFIG = "configs/pretrain/default_cpu.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML experiment config (default {DEFAULT_CONFIG})")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file or folder (any supported format)")
    parser.add_argument(
        "--output_dir", "--output-dir", default="visualizations", help="where the PNGs go (default visualizations/)"
    )
    parser.add_argument("--num_samples", "--num-samples", type=int, default=5, help="random dataset clips to draw")
    parser.add_argument("--frames_to_show", "--frames-to-show", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None, help="seed for clip choice and masks (default: random)")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument(
        "--video",
        action="append",
        default=None,
        metavar="FILE",
        help="a video file to draw instead of the dataset (repeatable)",
    )
    parser.add_argument("--start_frame", "--start-frame", type=int, default=0, help="skip this many frames of --video")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.mask_type=tube")
    return parser.parse_args(argv)


def load_model(checkpoint: str | None, cfg: Config) -> tuple[nn.Module, bool]:
    """(model in eval mode, whether it has a decoder to reconstruct with)."""
    import torch

    from everest.models import PretrainAutoencoder, load_encoder, load_pretrain_model, read_weights
    from everest.models.spec import spec_from_config

    if checkpoint is None:
        torch.manual_seed(0)
        return PretrainAutoencoder(spec_from_config(cfg)).eval(), False
    geometry = dict(num_frames=cfg.training.num_frames, input_size=cfg.model.input_size)
    if "encoder_to_decoder.weight" in read_weights(checkpoint).state_dict:
        return load_pretrain_model(checkpoint, **geometry), True
    return load_encoder(checkpoint, **geometry), False


def read_video(path: str | Path, cfg: Config, start_frame: int = 0) -> Tensor:
    """A model-sized uint8 clip [F, S, S, 3] from a video file: the window of the config's
    frames_to_sample x temporal_stride frames from `start_frame`, cut exactly as evaluation cuts
    its clips (`everest.data.clips.evaluation_views`: frame selection, short side resized to
    augmentation.short_side_size, centre crop)."""
    import numpy as np

    from everest.data.clips import Temporal, evaluation_views
    from everest.data.codec import iter_source_frames
    from everest.data.frames import candidate_window

    t = cfg.training
    span = (t.frames_to_sample - 1) * t.temporal_stride + 1
    frames = list(islice(iter_source_frames(path), start_frame, start_frame + span))
    if not frames:
        raise ValueError(f"{path}: no video frames after frame {start_frame}")
    window = candidate_window(len(frames), t.frames_to_sample, t.temporal_stride, start=0)
    views, _ = evaluation_views(
        np.stack(frames).__getitem__,
        [window],
        Temporal.of(t),
        cfg.model.input_size,
        cfg.augmentation.short_side_size,
        crops=1,
    )
    return views[0, 0]


def dataset_clips(cfg: Config, split: str, count: int, seed: int):
    """(name, uint8 clip [F, S, S, 3]) for `count` random clips of the config's dataset."""
    import numpy as np
    import torch

    from everest.data import build_dataloader

    cfg = copy.deepcopy(cfg)
    cfg.training.batch_size = cfg.training.val_batch_size = 1  # random access: no clip dropped for batching
    dataset = build_dataloader(cfg, split, shuffle=False, multiview=False).dataset
    if len(dataset) == 0:
        raise ConfigError(f"the {split} split of the config's dataset holds no clips")
    picks = np.random.default_rng(seed).choice(len(dataset), size=min(count, len(dataset)), replace=False)
    for index in picks.tolist():
        yield f"{split} clip {index}", torch.as_tensor(dataset[index]["video"])


def draw(
    model: nn.Module,
    reconstruct: bool,
    clip: Tensor,
    cfg: Config,
    generator: torch.Generator,
    frames_to_show: int,
    device: torch.device,
) -> np.ndarray:
    """The labelled grid of one uint8 clip [F, S, S, 3] as a uint8 HxWx3 image."""
    import torch

    with torch.no_grad():
        return _draw(model, reconstruct, clip, cfg, generator, frames_to_show, device)


def _draw(model, reconstruct: bool, clip, cfg: Config, generator, frames_to_show: int, device):
    from dataclasses import replace

    import torch
    from einops import rearrange

    from everest import tokens
    from everest.data import to_model_input
    from everest.patches import denormalize_video
    from everest.viz import clip_picture

    d, m, spec = cfg.data, cfg.model, model.spec
    video = to_model_input(clip[None], d.normalize_mean, d.normalize_std, device, torch.float32)
    video01 = denormalize_video(video, torch.tensor(d.normalize_mean), torch.tensor(d.normalize_std))
    embedded = model.embed(video)
    selection = tokens.select_for_pretraining(
        embedded, spec.grid, m.mask_type, m.mask_ratio, m.motion_centric_masking_ratio, generator=generator
    )
    if selection.scores is None:  # random / tube masking: the heatmap still shows the motion score
        selection = replace(
            selection, scores=tokens.motion_scores(rearrange(embedded, "b (t l) d -> b t l d", t=spec.grid[0]))
        )
    pred = model.forward_embedded(embedded, selection.visible, selection.target) if reconstruct else None
    return clip_picture(video01, selection, spec, pred, m.normalize_target, frames_to_show)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(resolve_path(args.config), args.overrides)
    for video in args.video or []:
        if not Path(video).is_file():
            raise FileNotFoundError(f"--video {video}: no such file")
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file or folder")

    import numpy as np
    import torch
    from PIL import Image

    from everest.models.weights import WeightsError

    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    try:
        model, reconstruct = load_model(args.checkpoint, cfg)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = model.to(device)
    if not reconstruct:
        why = (
            "no checkpoint: a freshly initialised patch embedding scores the tokens"
            if args.checkpoint is None
            else f"{args.checkpoint} has no decoder"
        )
        print(f"{why}; drawing selection and scores without the reconstruction row")
    if args.video:
        clips = ((path, read_video(path, cfg, args.start_frame)) for path in args.video)
    else:
        clips = dataset_clips(cfg, args.split, args.num_samples, seed)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for i, (name, clip) in enumerate(clips):
        image = draw(model, reconstruct, clip, cfg, generator, args.frames_to_show, device)
        path = out_dir / f"video_{i}_{'reconstruction' if reconstruct else 'selection'}_grid.png"
        Image.fromarray(image).save(path)
        print(f"{path}: {name} ({cfg.model.mask_type} masking, seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
