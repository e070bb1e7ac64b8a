"""Pictures of what the model sees and predicts: reconstruction grids and motion heatmaps.

One grid per clip, one column per shown frame, rows:
  original | masked (dropped tokens dark, visible as input, targets tinted red) |
  reconstruction (targets predicted, visible as input, dropped dark) | motion-score heatmap.
`selection_grid` draws the same picture without a model's predictions (no reconstruction row).
Both label their pictures (`labelled=True`): row titles on the left, frame numbers on top and a
legend below; `labelled=False` gives the bare grid of panels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from everest.models.vit import VideoViTSpec
from everest.patches import predictions_to_pixels, reconstruct_video, unpatchify

if TYPE_CHECKING:
    from everest.tokens import Selection

DROPPED_LEVEL = 0.08
TARGET_TINT = torch.tensor([1.0, 0.15, 0.15])
SEPARATOR = 2
# Margins of a labelled picture (pixels): row titles on the left, frame numbers on top, legend below.
LEFT_MARGIN, TOP_MARGIN, LEGEND_HEIGHT = 100, 16, 22
ROW_TITLES = {
    "original": "original",
    "masked": "masked input",
    "reconstruction": "reconstruction",
    "heatmap": "motion score",
}


def token_map(values: Tensor, spec: VideoViTSpec) -> Tensor:
    """Per-token values [N] -> a [F, H, W] map (each token fills its tubelet)."""
    per_pixel = values.float()[None, :, None].expand(1, -1, spec.tubelet_size * spec.patch_size**2)
    return unpatchify(per_pixel, spec.grid, spec.tubelet_size, spec.patch_size, channels=1)[0, 0]


def _colormap(values: Tensor) -> Tensor:
    """[F, H, W] in [0, 1] -> [3, F, H, W] with matplotlib's 'inferno'."""
    from matplotlib import colormaps

    rgb = colormaps["inferno"](values.clamp(0, 1).cpu().numpy())[..., :3]
    return torch.from_numpy(rgb).float().permute(3, 0, 1, 2)


def frame_indices(num_frames: int, to_show: int) -> list[int]:
    """Evenly spaced frames to show, always including the first."""
    to_show = max(1, min(to_show, num_frames))
    return np.linspace(0, num_frames - 1, to_show).round().astype(int).tolist()


def _role_map(visible: Tensor, target: Tensor, spec: VideoViTSpec) -> Tensor:
    """[1, F, H, W]: 0 where the token was dropped, 1 visible, 2 target."""
    role = torch.zeros(spec.num_patches)
    role[visible.cpu()] = 1
    role[target.cpu()] = 2
    return token_map(role, spec)[None]


def _heatmap(scores: Tensor, spec: VideoViTSpec) -> Tensor:
    """Per-token scores [N], min-max scaled over the clip, as an 'inferno' [3, F, H, W] panel."""
    s = scores.float().cpu()
    s = (s - s.min()) / (s.max() - s.min()).clamp_min(1e-12)
    return _colormap(token_map(s, spec))


def selection_rows(
    video01: Tensor, visible: Tensor, target: Tensor, spec: VideoViTSpec, scores: Tensor | None = None
) -> list[Tensor]:
    """Original, masked and (with scores) heatmap panels as [3, F, H, W] tensors in [0, 1]."""
    video01 = video01.float().cpu()
    roles = _role_map(visible, target, spec)
    dropped = torch.full_like(video01, DROPPED_LEVEL)
    tinted = 0.5 * video01 + 0.5 * TARGET_TINT.view(3, 1, 1, 1)
    masked = torch.where(roles == 1, video01, torch.where(roles == 2, tinted, dropped))
    return [video01, masked] + ([_heatmap(scores, spec)] if scores is not None else [])


def reconstruction_rows(
    video01: Tensor,
    visible: Tensor,
    target: Tensor,
    pred: Tensor,
    spec: VideoViTSpec,
    normalized: bool,
    scores: Tensor | None = None,
) -> list[Tensor]:
    """The panels of one clip as [3, F, H, W] tensors in [0, 1]."""
    rows = selection_rows(video01, visible, target, spec, scores)
    batch_video = rows[0][None]
    tgt = target.cpu()[None]
    pixels = predictions_to_pixels(pred.cpu()[None], batch_video, tgt, spec.tubelet_size, spec.patch_size, normalized)
    filled = reconstruct_video(batch_video, pixels, tgt, spec.tubelet_size, spec.patch_size)[0]
    reconstruction = torch.where(_role_map(visible, target, spec) == 0, DROPPED_LEVEL, filled)
    return rows[:2] + [reconstruction] + rows[2:]


def grid_image(rows: list[Tensor], frames: list[int]) -> np.ndarray:
    """Tile rows of [3, F, H, W] panels (chosen frames as columns) into one uint8 HxWx3 image."""
    _, _, h, w = rows[0].shape
    height = len(rows) * h + (len(rows) - 1) * SEPARATOR
    width = len(frames) * w + (len(frames) - 1) * SEPARATOR
    canvas = torch.ones(3, height, width)
    for r, row in enumerate(rows):
        for c, f in enumerate(frames):
            y, x = r * (h + SEPARATOR), c * (w + SEPARATOR)
            canvas[:, y : y + h, x : x + w] = row[:, f]
    return (canvas.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _legend_swatches() -> list[tuple[tuple[int, ...], str]]:
    grey = 0.6
    tinted = tuple(int(255 * (0.5 * grey + 0.5 * c)) for c in TARGET_TINT.tolist())
    return [
        ((int(255 * grey),) * 3, "visible: encoder input"),
        (tinted, "target: reconstructed"),
        ((int(255 * DROPPED_LEVEL),) * 3, "dropped: never enters the model"),
    ]


def annotate(grid: np.ndarray, titles: list[str], frames: list[int], heatmap: bool) -> np.ndarray:
    """`grid` (rows of panels, one column per frame) with row titles, frame numbers and a legend
    of the token roles (and of the heatmap's colours)."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    h, w, _ = grid.shape
    panel_h = (h - (len(titles) - 1) * SEPARATOR) // len(titles)
    panel_w = (w - (len(frames) - 1) * SEPARATOR) // len(frames)
    items = _legend_swatches()
    legend_width = (
        8
        + sum(29 + int(font.getlength(text)) for _, text in items)
        + (int(font.getlength("motion score: low")) + 90 if heatmap else 0)
    )
    canvas = Image.new("RGB", (max(LEFT_MARGIN + w, legend_width), TOP_MARGIN + h + LEGEND_HEIGHT), "white")
    canvas.paste(Image.fromarray(grid), (LEFT_MARGIN, TOP_MARGIN))
    draw = ImageDraw.Draw(canvas)
    for r, title in enumerate(titles):
        draw.text((4, TOP_MARGIN + r * (panel_h + SEPARATOR) + panel_h // 2 - 6), title, fill="black", font=font)
    for c, f in enumerate(frames):
        draw.text((LEFT_MARGIN + c * (panel_w + SEPARATOR) + 2, 2), f"frame {f}", fill="black", font=font)
    x, y = 4, TOP_MARGIN + h + 5
    for colour, text in items:
        draw.rectangle((x, y, x + 11, y + 11), fill=colour, outline="black")
        draw.text((x + 15, y), text, fill="black", font=font)
        x += 29 + int(font.getlength(text))
    if heatmap:
        ramp = (colormaps["inferno"](np.linspace(0, 1, 48))[:, :3] * 255).astype(np.uint8)
        draw.text((x, y), "motion score: low", fill="black", font=font)
        x += int(font.getlength("motion score: low")) + 4
        canvas.paste(Image.fromarray(np.repeat(ramp[None], 12, axis=0)), (x, y))
        draw.text((x + 52, y), "high", fill="black", font=font)
    return np.asarray(canvas)


def _picture(
    rows: list[Tensor], with_reconstruction: bool, with_heatmap: bool, frames_to_show: int, labelled: bool
) -> np.ndarray:
    """The rows' chosen frames tiled into a grid, titled and with a legend when `labelled`."""
    frames = frame_indices(rows[0].shape[1], frames_to_show)
    grid = grid_image(rows, frames)
    return annotate(grid, _titles(with_reconstruction, with_heatmap), frames, with_heatmap) if labelled else grid


def _titles(with_reconstruction: bool, with_heatmap: bool) -> list[str]:
    keys = (
        ["original", "masked"]
        + (["reconstruction"] if with_reconstruction else [])
        + (["heatmap"] if with_heatmap else [])
    )
    return [ROW_TITLES[k] for k in keys]


def reconstruction_grid(
    video01: Tensor,
    visible: Tensor,
    target: Tensor,
    pred: Tensor,
    spec: VideoViTSpec,
    normalized: bool,
    scores: Tensor | None = None,
    frames_to_show: int = 8,
    labelled: bool = True,
) -> np.ndarray:
    """One clip's grid as a uint8 HxWx3 array (see the module docstring for the rows)."""
    rows = reconstruction_rows(video01, visible, target, pred, spec, normalized, scores)
    return _picture(rows, True, scores is not None, frames_to_show, labelled)


def selection_grid(
    video01: Tensor,
    visible: Tensor,
    target: Tensor,
    spec: VideoViTSpec,
    scores: Tensor | None = None,
    frames_to_show: int = 8,
    labelled: bool = True,
) -> np.ndarray:
    """Like `reconstruction_grid` without predictions: original, masked and heatmap rows."""
    return _picture(
        selection_rows(video01, visible, target, spec, scores), False, scores is not None, frames_to_show, labelled
    )


def clip_picture(
    video01: Tensor,
    selection: Selection,
    spec: VideoViTSpec,
    pred: Tensor | None = None,
    normalized: bool = True,
    frames_to_show: int = 8,
) -> np.ndarray:
    """The labelled picture of the first clip of a batch (video01 [B, C, F, H, W] in [0, 1]): its
    token selection, the reconstruction row when `pred` [B, M, P] is given, and the motion-score
    heatmap when the selection carries scores. Training and the visualiser both draw with it."""
    visible, target = selection.visible[0], selection.target[0]
    scores = selection.scores[0] if selection.scores is not None else None
    if pred is None:
        return selection_grid(video01[0], visible, target, spec, scores, frames_to_show)
    return reconstruction_grid(video01[0], visible, target, pred[0], spec, normalized, scores, frames_to_show)
