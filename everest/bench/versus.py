"""python -m everest.bench.versus --published DIR [--task pretrain finetune] [--batch 2] [--repeats 5]
    [--device cpu|cuda] [--dtype fp32|bf16] [--json FILE]
python -m everest.bench.versus --published DIR --train-steps [N]   (see everest.bench.versus_training)

Our training step against the published EVEREST code's, in one process. DIR holds the
published modeling_pretrain.py and modeling_finetune.py (repository sunilhoho/EVEREST), kept
outside this repository and imported from there; nothing of them is copied here.

Both sides get the same ViT-B weights (ours are loaded from the published model's state dict)
and the same normalised clip batch. Ours is the step training runs (`PretrainObjective`,
`FinetuneObjective`: embedding, selection, encoder/decoder, target pixels, loss); theirs is the
published forward plus its engine's full-clip target preparation and MSE (pretraining) or
cross-entropy (fine-tuning, MCM inside its model). The steps alternate (ours, theirs, ours, ...)
and the medians of `--repeats` are reported: forward+backward, and the optimizer step apart
(ours: fused AdamW, as DeepSpeed's FusedAdam on GPU; theirs: torch's AdamW as timm's
create_optimizer builds it).

In fp32 it first checks that both compute the same thing: with the published code's token
sets given to ours (same visible and target tokens), loss and every parameter's gradient must
agree (relative error printed). `--dtype bf16` (GPU) runs ours in bf16 weights, as DeepSpeed's
bf16 mode does, against the published fp16 autocast path (fp32 weights, torch.autocast).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from everest.bench.measure import CudaMeter, RssMeter
from everest.bench.timing import describe_device, environment, interleaved, markdown_table, medians, write_json
from everest.config import DataConfig, config_from_dict
from everest.estimate.flops import count_flops

RHO, MASK_RATIO, MCM_RATIO, CLASSES = 0.7, 0.9, 0.4, 400
# the published code's ImageNet normalisation, which is our config's default
MEAN, STD = tuple(DataConfig().normalize_mean), tuple(DataConfig().normalize_std)


@dataclass
class Side:
    """One side's step: `forward()` -> loss; `optimizer`; `model` for parameter counts."""

    model: nn.Module
    forward: Callable[[], Tensor]
    optimizer: torch.optim.Optimizer
    autocast: torch.dtype | None = None  # the published GPU path runs under fp16 autocast


@dataclass
class Comparison:
    task: str
    loss_ours: float | None = None
    loss_theirs: float | None = None
    max_grad_rel_err: float | None = None
    same_tokens: bool | None = None
    flops_ours: int = 0
    flops_theirs: int = 0
    fwd_bwd_s: dict[str, list[float]] = field(default_factory=lambda: {"ours": [], "theirs": []})
    optimizer_s: dict[str, list[float]] = field(default_factory=lambda: {"ours": [], "theirs": []})
    peak_bytes: dict[str, int | None] = field(default_factory=dict)


class _FolderFinder(importlib.abc.MetaPathFinder):
    """Finds the top-level modules whose file `<name>.py` lies in `folder`, and nothing else:
    the published modules import each other by top-level name (`from modeling_finetune import
    ...`)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def find_spec(self, name: str, path=None, target=None):
        file = self.folder / f"{name}.py"
        if "." in name or not file.is_file():
            return None
        return importlib.util.spec_from_file_location(name, file)


@contextmanager
def _importing_from(folder: Path) -> Iterator[None]:
    finder = _FolderFinder(folder.resolve())
    sys.meta_path.insert(0, finder)  # ahead of the installed packages, as the folder's own scripts see it
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def import_published(folder: str):
    """The published (modeling_pretrain, modeling_finetune) modules from `folder`."""
    path = Path(folder)
    missing = [n for n in ("modeling_pretrain.py", "modeling_finetune.py") if not (path / n).is_file()]
    if missing:
        raise SystemExit(f"--published {folder}: missing {', '.join(missing)} (files of sunilhoho/EVEREST)")
    with _importing_from(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its timm.models.layers imports
        return importlib.import_module("modeling_pretrain"), importlib.import_module("modeling_finetune")


def _config(task: str, compile_blocks: bool = False):
    model = {
        "backbone": "vit-b",
        "attention_backend": "sdpa",
        "mask_type": "motion-centric",
        "motion_centric_masking_ratio": RHO,
        "mask_ratio": MASK_RATIO,
        "normalize_target": True,
    }
    if task == "finetune":
        model.update(mcm=True, mcm_ratio=MCM_RATIO, num_classes=CLASSES)
    return config_from_dict({"model": model, "features": {"compile": compile_blocks}})


def _published_targets(video: Tensor) -> Tensor:
    """The published engine's target preparation: the whole clip un-normalised, patchified and
    normalised per tubelet in fp32 (its no_grad block, our own writing of it)."""
    mean = torch.tensor(MEAN, device=video.device)[None, :, None, None, None]
    std = torch.tensor(STD, device=video.device)[None, :, None, None, None]
    patches = rearrange(video * std + mean, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=2, p1=16, p2=16)
    normed = (patches - patches.mean(dim=-2, keepdim=True)) / (
        patches.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6
    )
    return rearrange(normed, "b n p c -> b n (p c)")


@dataclass(frozen=True)
class PublishedSize:
    """The published models' size arguments (ViT-B over 16x224x224 by default)."""

    img_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    decoder_width: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    frames: int = 16


def published_pretrain(mp, size: PublishedSize = PublishedSize(), rho: float = RHO, mask_ratio: float = MASK_RATIO):
    """The published PretrainVisionTransformer with motion-centric masking."""
    return mp.PretrainVisionTransformer(
        img_size=size.img_size,
        patch_size=size.patch_size,
        encoder_embed_dim=size.width,
        encoder_depth=size.depth,
        encoder_num_heads=size.heads,
        decoder_num_classes=3 * 2 * size.patch_size**2,
        decoder_embed_dim=size.decoder_width,
        decoder_depth=size.decoder_depth,
        decoder_num_heads=size.decoder_heads,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        motion_centric_masking=True,
        motion_centric_masking_ratio=rho,
        masking_ratio=mask_ratio,
    )


def published_classifier(
    mf, size: PublishedSize = PublishedSize(), classes: int = CLASSES, mcm_ratio: float = MCM_RATIO
) -> nn.Module:
    """The published VisionTransformer with MCM."""
    return mf.VisionTransformer(
        img_size=size.img_size,
        patch_size=size.patch_size,
        embed_dim=size.width,
        depth=size.depth,
        num_heads=size.heads,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=classes,
        init_scale=0.001,
        all_frames=size.frames,
        mcm=True,
        mcm_ratio=mcm_ratio,
    )


def classifier_name(name: str) -> str:
    """A published VisionTransformer parameter name -> ours (the encoder's parts move under `encoder.`)."""
    return name if name.startswith(("fc_norm.", "head.")) else f"encoder.{name}"


def _classifier_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {classifier_name(k): v for k, v in state.items()}


def _pretrain_sides(mp, video: Tensor, dtype: torch.dtype, gpu_autocast: torch.dtype | None, compile_blocks: bool):
    from everest.tasks.pretrain import PretrainTask

    theirs = published_pretrain(mp).to(video.device)
    task = PretrainTask(_config("pretrain", compile_blocks))
    task.model.load_state_dict(theirs.state_dict())
    ours = task.module.to(video.device, dtype)
    _settle_linear(ours, "versus-pretrain", video, int((1 - MASK_RATIO) * task.model.spec.num_patches))
    noise = torch.rand(video.shape[0], task.model.spec.num_patches, device=video.device)

    def theirs_forward() -> Tensor:
        with torch.no_grad():
            patches = _published_targets(video)
        with torch.autocast("cuda", dtype=gpu_autocast, enabled=gpu_autocast is not None):
            pred, (_, target_mask) = theirs(video, None)
            labels = patches[~target_mask].reshape(video.shape[0], -1, patches.shape[-1])
            return F.mse_loss(pred, labels)

    return (
        Side(ours, lambda: ours(video, noise)[0], _fused_adamw(ours)),
        Side(theirs, theirs_forward, torch.optim.AdamW(theirs.parameters(), lr=1e-4), gpu_autocast),
    )


def _finetune_sides(
    mf, video: Tensor, labels: Tensor, dtype: torch.dtype, gpu_autocast: torch.dtype | None, compile_blocks: bool
):
    from everest.tasks.finetune import FinetuneTask

    theirs = published_classifier(mf).to(video.device)
    task = FinetuneTask(_config("finetune", compile_blocks), log=lambda _: None)
    task.model.load_state_dict(_classifier_names(theirs.state_dict()))
    ours = task.module.to(video.device, dtype).train()
    _settle_linear(ours, "versus-finetune", video, int((1 - MCM_RATIO) * task.model.spec.num_patches))

    def theirs_forward() -> Tensor:
        with torch.autocast("cuda", dtype=gpu_autocast, enabled=gpu_autocast is not None):
            return F.cross_entropy(theirs(video), labels)

    return (
        Side(ours, lambda: ours(video, labels)[0], _fused_adamw(ours)),
        Side(theirs, theirs_forward, torch.optim.AdamW(theirs.parameters(), lr=1e-4), gpu_autocast),
    )


def _settle_linear(module: nn.Module, name: str, video: Tensor, tokens: int) -> None:
    """On CPU, our side's linear backend as training chooses it (EVEREST_LINEAR forces one)."""
    if video.device.type == "cpu":
        from everest.models import linear_backend

        print(linear_backend.settle(module, name, video.shape[0] * tokens), file=sys.stderr, flush=True)


def _fused_adamw(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(module.parameters(), lr=1e-4, fused=True)


def _grads(module: nn.Module, loss_fn: Callable[[], Tensor]) -> tuple[float, dict[str, Tensor]]:
    module.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {
        n.removeprefix("model."): p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None
    }
    module.zero_grad(set_to_none=True)
    return loss.item(), grads


def _rel_err(ours: dict[str, Tensor], theirs: dict[str, Tensor]) -> float:
    if set(ours) != set(theirs):
        raise AssertionError(f"gradients of different parameters: {sorted(set(ours) ^ set(theirs))[:6]}")
    return max(((ours[k] - theirs[k]).norm() / theirs[k].norm().clamp_min(1e-30)).item() for k in theirs)


def check_pretrain(mp, video: Tensor, cmp: Comparison) -> None:
    """Same weights, batch and token sets: loss and gradients of both sides."""
    from everest.tasks.pretrain import PretrainTask

    theirs = published_pretrain(mp).to(video.device)
    task = PretrainTask(_config("pretrain"))
    task.model.load_state_dict(theirs.state_dict())
    masks: dict[str, Tensor] = {}

    def theirs_loss() -> Tensor:
        pred, (visible_mask, target_mask) = theirs(video, None)
        masks.update(visible=~visible_mask, target=~target_mask)
        patches = _published_targets(video)
        return F.mse_loss(pred, patches[~target_mask].reshape(video.shape[0], -1, patches.shape[-1]))

    cmp.loss_theirs, their_grads = _grads(theirs, theirs_loss)
    # ours shows the V kept tokens with the smallest keys: key 0 on their visible tokens
    noise = (~masks["visible"]).float()
    selection: dict[str, Tensor] = {}

    def ours_loss() -> Tensor:
        loss, _, sel = task.module(video, noise)
        selection.update(visible=sel.visible, target=sel.target)
        return loss

    cmp.loss_ours, our_grads = _grads(task.module, ours_loss)
    cmp.same_tokens = all(
        torch.equal(masks[k][b].nonzero()[:, 0], selection[k][b].sort().values)
        for k in ("visible", "target")
        for b in range(video.shape[0])
    )
    cmp.max_grad_rel_err = _rel_err(our_grads, their_grads)


def check_finetune(mf, video: Tensor, labels: Tensor, cmp: Comparison) -> None:
    from everest.tasks.finetune import FinetuneTask

    theirs = published_classifier(mf).to(video.device)
    nn.init.normal_(theirs.head.weight, std=0.02)  # a head of real size, so that its gradients matter
    task = FinetuneTask(_config("finetune"), log=lambda _: None)
    task.model.load_state_dict(_classifier_names(theirs.state_dict()))
    task.module.train()
    cmp.loss_theirs, their_grads = _grads(theirs, lambda: F.cross_entropy(theirs(video), labels))
    cmp.loss_ours, our_grads = _grads(task.module, lambda: task.module(video, labels)[0])
    cmp.same_tokens = True  # MCM is deterministic: the same top-K by the same scores
    cmp.max_grad_rel_err = _rel_err(our_grads, _classifier_names(their_grads))


def _step_memory(device: torch.device, side: Side) -> int | None:
    """Peak bytes of one forward+backward above what was held before it (CUDA allocator, or the
    process's resident set on CPU; see everest.bench.measure)."""
    try:
        meter = CudaMeter(device) if device.type == "cuda" else RssMeter()
    except OSError:
        return None
    meter.start()
    before = meter.current()
    _fwd_bwd(side)
    peak = meter.peak() - before
    side.optimizer.zero_grad(set_to_none=True)
    return peak


def _fwd_bwd(side: Side) -> None:
    side.forward().backward()


def _optimizer_step(side: Side) -> None:
    side.optimizer.step()
    side.optimizer.zero_grad(set_to_none=True)


def run(
    task: str,
    mp,
    mf,
    batch: int,
    repeats: int,
    warmup: int,
    device: torch.device,
    dtype: torch.dtype,
    check: bool,
    log: Callable[[str], None],
    compile_blocks: bool = False,
) -> Comparison:
    torch.manual_seed(0)
    video = (
        (torch.rand(batch, 3, 16, 224, 224) - torch.tensor(MEAN).view(1, 3, 1, 1, 1))
        / torch.tensor(STD).view(1, 3, 1, 1, 1)
    ).to(device)
    labels = torch.randint(CLASSES, (batch,)).to(device)
    cmp = Comparison(task)
    if check:
        (check_pretrain(mp, video, cmp) if task == "pretrain" else check_finetune(mf, video, labels, cmp))
        log(
            f"{task} check: loss ours {cmp.loss_ours:.6f} theirs {cmp.loss_theirs:.6f}, same tokens "
            f"{cmp.same_tokens}, largest relative gradient difference {cmp.max_grad_rel_err:.2e}"
        )
    autocast = torch.float16 if device.type == "cuda" and dtype != torch.float32 else None
    ours, theirs = (
        _pretrain_sides(mp, video, dtype, autocast, compile_blocks)
        if task == "pretrain"
        else _finetune_sides(mf, video, labels, dtype, autocast, compile_blocks)
    )
    sides = {"ours": ours, "theirs": theirs}
    for name, side in sides.items():  # the first warm-up step, FLOP-counted
        setattr(cmp, f"flops_{name}", count_flops(partial(_fwd_bwd, side)))
        _optimizer_step(side)
    steps = {}
    for name, side in sides.items():
        steps[f"{name} fwd+bwd"] = partial(_fwd_bwd, side)
        steps[f"{name} optimizer"] = partial(_optimizer_step, side)
    times = interleaved(steps, repeats, warmup - 1, device, log=log, label=f"{task} ").wall
    cmp.fwd_bwd_s = {name: times[f"{name} fwd+bwd"] for name in sides}
    cmp.optimizer_s = {name: times[f"{name} optimizer"] for name in sides}
    cmp.peak_bytes = {name: _step_memory(device, side) for name, side in sides.items()}
    return cmp


def render(
    results: list[Comparison], batch: int, device: torch.device, dtype: torch.dtype, load: tuple[float, float]
) -> str:
    theirs_dtype = "fp16 autocast" if device.type == "cuda" and dtype != torch.float32 else "fp32"
    lines = [
        f"### Ours vs the published EVEREST code: ViT-B, batch {batch}, 16x224x224",
        "",
        f"{describe_device(device)}, torch {torch.__version__}; ours {str(dtype).removeprefix('torch.')}, "
        f"published {theirs_dtype}; median of {len(results[0].fwd_bwd_s['ours'])} interleaved steps; "
        f"load average {load[0]:.2f} at the start, {load[1]:.2f} at the end ({os.cpu_count()} CPUs); step "
        "memory: peak of one forward+backward above what was held before it.",
        "",
    ]
    rows = []
    for c in results:
        med, opt = medians(c.fwd_bwd_s), medians(c.optimizer_s)
        whole = {k: med[k] + opt[k] for k in med}
        peak = (
            "n/a"
            if c.peak_bytes.get("ours") is None
            else f"{c.peak_bytes['ours'] / 2**30:.2f} / {c.peak_bytes['theirs'] / 2**30:.2f}"
        )
        rows.append(
            [
                c.task,
                f"{c.flops_ours / 1e9:.1f} / {c.flops_theirs / 1e9:.1f}",
                f"{med['ours']:.3f}",
                f"{med['theirs']:.3f}",
                f"{med['ours'] / med['theirs']:.3f}",
                f"{opt['ours']:.3f}",
                f"{opt['theirs']:.3f}",
                f"{whole['ours'] / whole['theirs']:.3f}",
                f"{whole['theirs'] / whole['ours']:.2f}x",
                peak,
            ]
        )
    lines.append(
        markdown_table(
            [
                "step",
                "GFLOPs ours / published",
                "fwd+bwd s ours",
                "fwd+bwd s published",
                "ratio",
                "optimizer s ours",
                "optimizer s published",
                "whole step ratio",
                "clips/s ours / published",
                "step memory GiB ours / published",
            ],
            rows,
        )
    )
    for c in results:
        if c.loss_ours is not None:
            lines.append(
                f"\n{c.task}: same weights, batch and tokens (same sets: {c.same_tokens}): loss "
                f"{c.loss_ours:.6f} ours, {c.loss_theirs:.6f} published; largest relative gradient "
                f"difference over the parameters {c.max_grad_rel_err:.2e}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m everest.bench.versus", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--published", required=True, help="folder with the published modeling_*.py")
    parser.add_argument("--task", nargs="+", default=["pretrain", "finetune"], choices=["pretrain", "finetune"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="ours (auto: bf16 on CUDA, the published side then under fp16 autocast; fp32 on CPU)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the equality check (it runs in fp32)")
    parser.add_argument("--compile", action="store_true", help="ours with features.compile (timed after warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--train-steps",
        type=int,
        nargs="?",
        const=200,
        default=None,
        help="run the published training loop against ours for N steps (default 200) on a tiny model "
        "(everest.bench.versus_training); --published then also needs its engine_for_*, optim_factory and utils",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_steps is not None:
        from everest.bench import versus_training

        log = partial(print, file=sys.stderr)
        return versus_training.main(args.published, args.task, args.train_steps, args.batch, args.json, log)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    mp, mf = import_published(args.published)
    load_before = os.getloadavg()[0]
    log = partial(print, file=sys.stderr)
    results = [
        run(
            task,
            mp,
            mf,
            args.batch,
            args.repeats,
            args.warmup,
            device,
            dtype,
            not args.no_check and dtype == torch.float32,
            log,
            args.compile,
        )
        for task in args.task
    ]
    print(render(results, args.batch, device, dtype, (load_before, os.getloadavg()[0])))
    if args.json:
        write_json(args.json, {**environment(device), "comparisons": [asdict(c) for c in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
