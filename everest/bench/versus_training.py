"""python -m everest.bench.versus --published DIR --train-steps [N] [--task pretrain finetune]
    [--batch 2] [--json FILE]

The published EVEREST training loop against ours, N optimizer steps each, on a tiny model in
fp32 on the CPU. DIR holds the published files, imported from there and never copied here:
modeling_pretrain.py, modeling_finetune.py, engine_for_pretraining.py (sunilhoho/EVEREST) and
engine_for_finetuning.py, optim_factory.py, utils.py (MCG-NJU/VideoMAE, which EVEREST builds on
and whose fine-tuning engine its run_class_finetuning.py imports).

Published side: `train_one_epoch` of its engine, with the optimizer of `create_optimizer`
(weight-decay groups from the model's `no_weight_decay` skip list; for fine-tuning the layer
decay of `LayerDecayValueAssigner`) and the lr/wd values of `utils.cosine_scheduler`, built as
run_ms_pretraining.py and run_class_finetuning.py build them (lr and min_lr scaled by batch/256,
warmup by steps). Its CUDA-only calls get CPU shims at run time, each one named in the output.

Our side: `everest.engine.trainer.fit` itself (DeepSpeed engine, ZeRO 0, fp32) with the same
recipe turned into our config, the published initial weights, the same uint8 clips in the same
order, and the published token sets of every step (for pretraining our random keys are also set
to 0 on its visible tokens, 1 elsewhere, so that our own selection shows the same visible ones).

Reported: per step the loss, the lr and weight decay of every parameter, the gradient norm
(before clipping) of both sides; the largest relative loss difference over the steps and the
parameters' relative difference at the end; lr/wd per parameter group at three steps.

Deviation found and fixed (in ours): the warmup. VideoMAE's cosine_scheduler warms up with
np.linspace(0, base, W), reaching `base` on step W-1; ours stopped one step short (base * t / W),
5% lower lr through a 20-step warmup. everest.engine.optim.cosine_schedule now ends its warmup
on base as the published one does (tests: test_engine_units::test_cosine_schedule_formula,
test_versus_training::test_our_lr_and_wd_per_group_follow_the_published_schedule).

Known difference, kept: ties at the top-K boundary. Slot 0 takes slot 1's motion score, so every
position has a pair of tokens with the same score; when the K-th place falls between the two,
the published argsort keeps the slot-1 token on this CPU and our top-K the slot-0 one (either is
right; torch does not define the order of its unstable sort). The comparison therefore gives
ours the published token sets of every step and counts how ours compared: same, a swap of tied
tokens only, or different.

Not compared, deliberately: drop path and dropout (off on both sides: their random streams
differ), mixup/cutmix, and fp16 autocast with loss scaling (the published GPU path; here fp32).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sys
import tempfile
import types
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from everest.bench.timing import describe_device, environment, markdown_table, write_json
from everest.bench.versus import (
    MEAN,
    STD,
    PublishedSize,
    _classifier_names,
    _importing_from,
    classifier_name,
    import_published,
    published_classifier,
    published_pretrain,
)
from everest.tokens import Selection

PUBLISHED_FILES = {
    "modeling_pretrain.py": "sunilhoho/EVEREST",
    "modeling_finetune.py": "sunilhoho/EVEREST",
    "engine_for_pretraining.py": "sunilhoho/EVEREST",
    "engine_for_finetuning.py": "MCG-NJU/VideoMAE",
    "optim_factory.py": "MCG-NJU/VideoMAE",
    "utils.py": "MCG-NJU/VideoMAE",
}
# The tiny model both sides train: 16 frames (the published MCM code assumes 8 temporal slots),
# 32x32 pixels in 8x8 patches: 8 x 16 = 128 tokens.
FRAMES, SIZE, PATCH, WIDTH, DEPTH, HEADS = 16, 32, 8, 64, 2, 2
DECODER_WIDTH, DECODER_DEPTH, DECODER_HEADS = 32, 1, 2
TINY = PublishedSize(SIZE, PATCH, WIDTH, DEPTH, HEADS, DECODER_WIDTH, DECODER_DEPTH, DECODER_HEADS, FRAMES)
RHO, MASK_RATIO, MCM_RATIO, CLASSES, CLIPS = 0.7, 0.9, 0.4, 10, 16


@dataclass(frozen=True)
class Recipe:
    """One recipe for both sides; lr and min_lr per 256 clips, as both scripts take them."""

    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    weight_decay_end: float
    betas: tuple[float, float]
    eps: float
    clip_grad: float | None
    layer_decay: float = 1.0
    label_smoothing: float = 0.0


# lr per 256 clips chosen so that batch 2 trains at 1e-3 (pretraining) and 5e-4 (fine-tuning);
# the weight decay rises over the run in pretraining so that its schedule is compared too; the
# clipping norms make clipping act on every fine-tuning step and on the early pretraining ones.
RECIPES = {
    "pretrain": Recipe(0.128, 1.28e-3, 20, 0.05, 0.1, (0.9, 0.95), 1e-8, 0.1),
    "finetune": Recipe(0.064, 1.28e-4, 20, 0.05, 0.05, (0.9, 0.999), 1e-8, 0.5, 0.75, 0.1),
}


@dataclass
class Trace:
    """One side's run: per step the loss, gradient norm and {parameter: (lr, wd)}."""

    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    lr_wd: list[dict[str, tuple[float, float]]] = field(default_factory=list)
    tokens: list[list[Tensor]] = field(default_factory=list)  # per step, per clip: sorted token ids
    agreement: list[str] = field(default_factory=list)  # ours: per step 'same', 'tie' or 'different'
    final: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class TrainingComparison:
    task: str
    steps: int
    batch: int
    recipe: dict[str, Any]
    losses: dict[str, list[float]]
    grad_norms: dict[str, list[float]]
    groups: dict[str, list[str]]  # group label -> parameter names (published grouping)
    group_lr_wd: dict[str, dict[str, list[list[float]]]]  # side -> label -> per step [lr, wd]
    max_loss_rel_diff: float
    max_loss_step: int
    final_param_rel_diff: float
    max_tensor_rel_diff: float
    max_lr_rel_diff: float
    max_wd_abs_diff: float
    max_grad_norm_rel_diff: float
    own_tokens: dict[str, int]  # steps where our own selection was the same, a tie swap, different
    shims: list[str]


# ------------------------------------------------------------------------------ published side


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _unavailable(what: str) -> type:
    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"{what} is a stub in this comparison")

    return Unavailable


# what optim_factory.py imports from timm: (module, name)
TIMM_OPTIMIZERS = [
    ("adafactor", "Adafactor"),
    ("adahessian", "Adahessian"),
    ("adamp", "AdamP"),
    ("lookahead", "Lookahead"),
    ("nadam", "Nadam"),
    ("novograd", "NovoGrad"),
    ("nvnovograd", "NvNovoGrad"),
    ("radam", "RAdam"),
    ("rmsprop_tf", "RMSpropTF"),
    ("sgdp", "SGDP"),
]


def _stub_timm_optimizers() -> list[str]:
    """Stand-ins for the timm optimizers optim_factory imports that this timm lacks or renamed
    (only opt='adamw' runs here, which is torch's AdamW)."""
    stubbed = []
    for module_name, name in TIMM_OPTIMIZERS:
        full = f"timm.optim.{module_name}"
        if importlib.util.find_spec(full) is None:
            sys.modules[full] = _stub(full, **{name: _unavailable(name)})
        else:
            module = importlib.import_module(full)
            if hasattr(module, name):
                continue
            setattr(module, name, _unavailable(name))
        stubbed.append(f"{full}.{name}")
    if not stubbed:
        return []
    return [f"{', '.join(stubbed)}: stubs (missing or renamed in timm {_timm_version()}; only opt='adamw' runs)"]


def _timm_version() -> str:
    import timm

    return timm.__version__


def _stub_missing_imports(folder: Path) -> list[str]:
    """Stand-ins for what the published files import but this environment lacks; none of them
    is used on the path compared. Returns the shims' descriptions."""
    shims = _stub_timm_optimizers()
    if importlib.util.find_spec("tensorboardX") is None:
        sys.modules["tensorboardX"] = _stub("tensorboardX", SummaryWriter=_unavailable("tensorboardX.SummaryWriter"))
        shims.append("tensorboardX: stub module (not installed; only its TensorboardLogger uses it, log_writer=None)")
    if not (folder / "mixup.py").is_file():
        sys.modules["mixup"] = _stub("mixup", Mixup=_unavailable("mixup.Mixup"))
        shims.append("mixup: stub module (VideoMAE's mixup.py not in --published; the engine uses it for a type only)")
    return shims


def import_published_training(folder: str) -> tuple[types.SimpleNamespace, list[str]]:
    """The published modules from `folder` (modeling_*, engine_for_*, optim_factory, utils)
    and the import shims it needed; one line naming the missing files if any are absent."""

    path = Path(folder)
    missing = [n for n in PUBLISHED_FILES if not (path / n).is_file()]
    if missing:
        where = ", ".join(f"{n} ({PUBLISHED_FILES[n]})" for n in missing)
        raise SystemExit(f"--published {folder}: missing {where}")
    shims = _stub_missing_imports(path)
    mp, mf = import_published(folder)
    modules = {"modeling_pretrain": mp, "modeling_finetune": mf}
    with _importing_from(path), contextlib.redirect_stdout(sys.stderr):
        for name in ("utils", "optim_factory", "engine_for_pretraining", "engine_for_finetuning"):
            modules[name] = importlib.import_module(name)
    for name, module in modules.items():
        if Path(module.__file__).resolve().parent != path.resolve():
            raise SystemExit(f"--published {folder}: '{name}' was already imported from {module.__file__}")
    return types.SimpleNamespace(**modules), shims


@contextlib.contextmanager
def cpu_shims(utils) -> Iterator[list[str]]:
    """The published loop's CUDA-only calls made to run on the CPU in fp32, undone on exit."""
    patches = [
        (torch.cuda.amp, "autocast", partial(torch.autocast, "cpu", enabled=False)),
        (torch.cuda.amp, "GradScaler", partial(torch.amp.GradScaler, "cpu")),
        (torch.cuda, "synchronize", lambda *args, **kwargs: None),
        (utils, "is_dist_avail_and_initialized", lambda: False),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield [
            "torch.cuda.amp.autocast -> torch.autocast('cpu', enabled=False) (fp32 on both sides)",
            "torch.cuda.amp.GradScaler -> torch.amp.GradScaler('cpu') (its NativeScaler; scale 2^16 "
            "is exact in fp32, and the loop reads state_dict()['scale'], empty when disabled)",
            "torch.cuda.synchronize -> no-op",
            "utils.is_dist_avail_and_initialized -> False (one process: its metric sync would "
            "all-reduce a CUDA tensor over our gloo group)",
        ]
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _published_args(recipe: Recipe, batch: int) -> Namespace:
    """What create_optimizer reads of the scripts' arguments, lr already scaled by batch/256."""
    return Namespace(
        opt="adamw",
        opt_eps=recipe.eps,
        opt_betas=list(recipe.betas),
        weight_decay=recipe.weight_decay,
        lr=recipe.lr * batch / 256,
        momentum=0.9,
    )


def _published_optimizer(pub, task: str, model: nn.Module, recipe: Recipe, batch: int):
    """create_optimizer as run_ms_pretraining.py / run_class_finetuning.py call it."""
    args = _published_args(recipe, batch)
    if task == "pretrain":
        return pub.optim_factory.create_optimizer(args, model)
    layers = model.get_num_layers()
    assigner = pub.optim_factory.LayerDecayValueAssigner(
        [recipe.layer_decay ** (layers + 1 - i) for i in range(layers + 2)]
    )
    return pub.optim_factory.create_optimizer(
        args,
        model,
        skip_list=model.no_weight_decay(),
        get_num_layer=assigner.get_layer_id,
        get_layer_scale=assigner.get_scale,
    )


def _published_schedules(pub, recipe: Recipe, batch: int, steps: int):
    """utils.cosine_scheduler as the scripts call it: one epoch of `steps`, warmup by steps."""
    lr = pub.utils.cosine_scheduler(
        recipe.lr * batch / 256,
        recipe.min_lr * batch / 256,
        1,
        steps,
        warmup_epochs=1,
        warmup_steps=recipe.warmup_steps,
    )
    wd = pub.utils.cosine_scheduler(recipe.weight_decay, recipe.weight_decay_end, 1, steps)
    return lr, wd


def _lr_wd(optimizer, names: dict[int, str]) -> dict[str, tuple[float, float]]:
    return {
        names[id(p)]: (float(g["lr"]), float(g["weight_decay"])) for g in optimizer.param_groups for p in g["params"]
    }


class _RecordingScaler:
    """The published loss scaler, recording loss, lr/wd and the returned gradient norm."""

    def __init__(self, scaler, trace: Trace, names: dict[int, str]):
        self.scaler, self.trace, self.names = scaler, trace, names

    def __call__(self, loss: Tensor, optimizer, **kwargs):
        self.trace.losses.append(loss.item())
        self.trace.lr_wd.append(_lr_wd(optimizer, self.names))
        norm = self.scaler(loss, optimizer, **kwargs)
        self.trace.grad_norms.append(float(norm))
        return norm

    def state_dict(self):
        return self.scaler.state_dict()


def _published_name(task: str, name: str) -> str:
    """A published parameter name in our naming (pretraining's are the same)."""
    return name if task == "pretrain" else classifier_name(name)


def _record_published_tokens(task: str, model: nn.Module, trace: Trace) -> None:
    """Per step and clip, the sorted ids of the visible tokens (pretraining: and the targets)."""
    if task == "pretrain":

        def hook(_module, _inputs, output):
            visible, target = output[1]
            trace.tokens.append([(~m).nonzero()[:, 0] for m in (*visible, *target)])

        model.register_forward_hook(hook)
        return
    step = model.mcm_step

    def recorded(*args):
        mask = step(*args)
        trace.tokens.append([(~m).nonzero()[:, 0] for m in mask])
        return mask

    model.mcm_step = recorded


def run_published(pub, task: str, recipe: Recipe, batches: list[dict[str, Tensor]], model: nn.Module):
    """The published train_one_epoch over `batches` -> (Trace, shims)."""
    from everest.data import to_model_input

    trace = Trace()
    names = {id(p): _published_name(task, n) for n, p in model.named_parameters()}
    batch = batches[0]["video"].shape[0]
    steps = len(batches)
    with contextlib.redirect_stdout(sys.stderr):
        optimizer = _published_optimizer(pub, task, model, recipe, batch)
        lr_values, wd_values = _published_schedules(pub, recipe, batch, steps)
    _record_published_tokens(task, model, trace)
    videos = [to_model_input(b["video"], MEAN, STD, "cpu") for b in batches]  # its engine's ImageNet values
    with cpu_shims(pub.utils) as shims, contextlib.redirect_stdout(sys.stderr):
        scaler = _RecordingScaler(pub.utils.NativeScalerWithGradNormCount(), trace, names)
        common = dict(
            optimizer=optimizer,
            device=torch.device("cpu"),
            epoch=0,
            loss_scaler=scaler,
            max_norm=recipe.clip_grad,
            log_writer=None,
            start_steps=0,
            lr_schedule_values=lr_values,
            wd_schedule_values=wd_values,
        )
        if task == "pretrain":
            loader = [(v, torch.zeros(v.shape[0], 1, dtype=torch.bool)) for v in videos]
            pub.engine_for_pretraining.train_one_epoch(
                model, loader, patch_size=PATCH, normlize_target=True, mask_type="motion-centric", **common
            )
        else:
            criterion = _published_criterion(recipe)
            loader = [(v, b["label"], b["index"], 0) for v, b in zip(videos, batches)]
            pub.engine_for_finetuning.train_one_epoch(
                model, criterion, loader, num_training_steps_per_epoch=steps, update_freq=1, **common
            )
    trace.final = {names[id(p)]: p.detach().clone() for p in model.parameters()}
    return trace, shims


def _published_criterion(recipe: Recipe) -> nn.Module:
    """run_class_finetuning.py's choice without mixup: timm's label-smoothing cross-entropy."""
    if recipe.label_smoothing > 0:
        from timm.loss import LabelSmoothingCrossEntropy

        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return nn.CrossEntropyLoss()


# ------------------------------------------------------------------------------------ our side


def our_config(task: str, recipe: Recipe, batch: int, steps: int, folder: str):
    """The recipe as our config: the tiny model, one epoch of `steps`, fp32 ZeRO 0 on the CPU."""
    from everest.config import config_from_dict

    model = {
        "embed_dim": WIDTH,
        "depth": DEPTH,
        "num_heads": HEADS,
        "mlp_ratio": 4.0,
        "decoder_embed_dim": DECODER_WIDTH,
        "decoder_depth": DECODER_DEPTH,
        "decoder_num_heads": DECODER_HEADS,
        "input_size": SIZE,
        "patch_size": PATCH,
        "mask_type": "motion-centric",
        "motion_centric_masking_ratio": RHO,
        "mask_ratio": MASK_RATIO,
        "normalize_target": True,
        "drop_path_rate": 0.0,
    }
    if task == "finetune":
        model.update(mcm=True, mcm_ratio=MCM_RATIO, num_classes=CLASSES, layer_decay=recipe.layer_decay)
    return config_from_dict(
        {
            "model": model,
            "training": {
                "batch_size": batch,
                "num_frames": FRAMES,
                "frames_to_sample": FRAMES,
                "max_epochs": 1,
                "gradient_clip_val": recipe.clip_grad or 0.0,
                "deepspeed_config": "ds_configs/zero0.json",
                "precision": "fp32",
                "device": "cpu",
            },
            "optimizer": {
                "lr": recipe.lr,
                "min_lr": recipe.min_lr,
                "warmup_steps": recipe.warmup_steps,
                "weight_decay": recipe.weight_decay,
                "weight_decay_end": recipe.weight_decay_end,
                "betas": list(recipe.betas),
                "eps": recipe.eps,
                "scale_lr_by_batch": True,
            },
            "augmentation": {"label_smoothing": recipe.label_smoothing},
            "features": {"linear_backend": "torch"},
            "checkpoint": {"enable": False, "dir": f"{folder}/checkpoints"},
            "logging": {
                "log_dir": f"{folder}/logs",
                "log_freq": max(steps, 1),
                "image_freq": 0,
                "probe_every_n_epochs": 0,
                "pretext_warn_after": 0.0,
            },
        }
    )


def _grad_norm(module: nn.Module) -> float:
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def _record_ours(task, trace: Trace, names: dict[int, str]) -> None:
    """Hooks on our task: the gradient norm before DeepSpeed's step (and its clipping), lr/wd
    per parameter after each optimizer step."""
    ready, after = task.on_engine_ready, task.after_step

    def on_engine_ready(engine, zero_stage, device):
        ready(engine, zero_stage, device)
        step = engine.step

        def recorded_step(*args, **kwargs):
            trace.grad_norms.append(_grad_norm(engine.module))
            return step(*args, **kwargs)

        engine.step = recorded_step

    def after_step(engine, step):
        trace.lr_wd.append(_lr_wd(engine.optimizer, names))
        after(engine, step)

    task.on_engine_ready, task.after_step = on_engine_ready, after_step
    task.draws_pictures = False


def agreement(ours: Tensor, theirs: Tensor, scores: Tensor) -> str:
    """'same' when our kept ids equal the published ones, 'tie' when they differ only by tokens
    of exactly equal motion score (slot 0 takes slot 1's score, so every position has a tied
    pair), 'different' otherwise."""
    mine, their = set(ours.tolist()), set(theirs.tolist())
    if mine == their:
        return "same"
    only_ours, only_theirs = sorted(mine - their), sorted(their - mine)
    tied = torch.equal(scores[only_ours].sort().values, scores[only_theirs].sort().values)
    return "tie" if tied else "different"


def _their_selection(ours: Selection, their_ids: list[Tensor], trace: Trace) -> Selection:
    """The published token ids of the step (index order, as its boolean masks give them) in
    place of ours; how ours compared is recorded."""
    clips = ours.visible.shape[0]
    visible = torch.stack(their_ids[:clips]).to(ours.visible.device)
    target = torch.stack(their_ids[clips:]).to(ours.visible.device) if ours.target is not None else None
    kept_ours = ours.visible if ours.target is None else torch.cat([ours.visible, ours.target], 1)
    kept_theirs = visible if target is None else torch.cat([visible, target], 1)
    states = [agreement(kept_ours[b], kept_theirs[b], ours.scores[b]) for b in range(clips)]
    trace.agreement.append("different" if "different" in states else "tie" if "tie" in states else "same")
    return Selection(visible, target, ours.scores)


def _pretrain_with_their_tokens(task, their_tokens: list[list[Tensor]], trace: Trace) -> None:
    """Our keys: 0 on the published visible tokens of the step, 1 elsewhere (so our own
    selection shows the same visible tokens); then the published sets themselves are used,
    since a top-K boundary through a tied pair may fall either way."""
    inputs, select = task._inputs, task.module.select
    num_tokens = task.model.spec.num_patches

    def their_keys(batch, ctx):
        video, noise = inputs(batch, ctx)
        if ctx.step < len(their_tokens):
            noise = torch.ones(video.shape[0], num_tokens)
            for b, visible in enumerate(their_tokens[ctx.step][: video.shape[0]]):
                noise[b, visible] = 0.0
        return video, noise

    def their_selection(embedded, noise):
        ours = select(embedded, noise)
        step = len(trace.agreement)
        if not task.module.training or step >= len(their_tokens):
            return ours
        return _their_selection(ours, their_tokens[step], trace)

    task._inputs, task.module.select = their_keys, their_selection


@contextlib.contextmanager
def _finetune_with_their_tokens(their_tokens: list[list[Tensor]], trace: Trace) -> Iterator[None]:
    """Our MCM selection replaced by the published kept tokens of the step, compared first."""
    from everest import tokens

    select = tokens.select_for_finetuning

    def their_selection(*args, **kwargs):
        ours = select(*args, **kwargs)
        step = len(trace.agreement)
        return ours if step >= len(their_tokens) else _their_selection(ours, their_tokens[step], trace)

    tokens.select_for_finetuning = their_selection
    try:
        yield
    finally:
        tokens.select_for_finetuning = select


def _our_task(task_name: str, cfg, initial: dict[str, Tensor]):
    if task_name == "pretrain":
        from everest.tasks.pretrain import PretrainTask

        task = PretrainTask(cfg)
        task.model.load_state_dict(initial)
    else:
        from everest.tasks.finetune import FinetuneTask

        task = FinetuneTask(cfg, log=lambda _: None)
        task.model.load_state_dict(_classifier_names(initial))
    return task


def run_ours(
    task_name: str,
    recipe: Recipe,
    batches: list[dict[str, Tensor]],
    initial: dict[str, Tensor],
    their: Trace,
    dist_info,
) -> Trace:
    """Our trainer's `fit` over `batches` from the published initial weights."""
    from everest.engine.trainer import fit

    trace = Trace()
    with tempfile.TemporaryDirectory(prefix="everest-versus-") as folder:
        cfg = our_config(task_name, recipe, batches[0]["video"].shape[0], len(batches), folder)
        task = _our_task(task_name, cfg, initial)
        names = {id(p): n.removeprefix("model.") for n, p in task.module.named_parameters()}
        _record_ours(task, trace, names)
        recording = contextlib.nullcontext()
        if task_name == "pretrain":
            _pretrain_with_their_tokens(task, their.tokens, trace)
        else:
            recording = _finetune_with_their_tokens(their.tokens, trace)
        with recording, contextlib.redirect_stdout(sys.stderr):
            result = fit(cfg, task, train_loader=batches, dist_info=dist_info)
    trace.losses = list(result.losses)
    trace.final = {names[id(p)]: p.detach().clone() for p in task.module.parameters()}
    return trace


# ---------------------------------------------------------------------------------- comparison


def make_batches(steps: int, batch: int, seed: int = 0) -> list[dict[str, Tensor]]:
    """`steps` batches drawn in a seeded order from CLIPS clips (uint8 [B, F, H, W, 3]) of a
    bright square moving over a background with fresh noise in every frame (no two positions
    with the same motion score; the two slots of one position still tie by design, see the
    module docstring), each clip with a fixed label."""
    g = torch.Generator().manual_seed(seed)
    background = torch.rand(CLIPS, 1, SIZE, SIZE, 3, generator=g) * 160
    clips = background + torch.rand(CLIPS, FRAMES, SIZE, SIZE, 3, generator=g) * 40
    for i in range(CLIPS):
        x0, y0, speed = torch.randint(0, SIZE // 2, (3,), generator=g).tolist()
        for f in range(FRAMES):
            x = (x0 + (1 + speed % 3) * f) % (SIZE - 8)
            clips[i, f, y0 : y0 + 8, x : x + 8] = 255
    clips = clips.to(torch.uint8)
    labels = torch.randint(CLASSES, (CLIPS,), generator=g)
    order = torch.cat([torch.randperm(CLIPS, generator=g) for _ in range(math.ceil(steps * batch / CLIPS))])
    out = []
    for s in range(steps):
        index = order[s * batch : (s + 1) * batch]
        out.append({"video": clips[index], "label": labels[index], "index": index})
    return out


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def group_labels(names: Sequence[str], decays: dict[str, bool], layer_decay: float) -> dict[str, list[str]]:
    """Parameter names by group label ('decay', 'no decay'; with layer decay 'layer L decay')."""
    from everest.models.vit import layer_id_for

    groups: dict[str, list[str]] = {}
    for name in names:
        kind = "decay" if decays[name] else "no decay"
        label = f"layer {layer_id_for(name, DEPTH)} {kind}" if layer_decay != 1.0 else kind
        groups.setdefault(label, []).append(name)
    return dict(sorted(groups.items()))


def _group_series(trace: Trace, groups: dict[str, list[str]]) -> dict[str, list[list[float]]]:
    """Per group and step [lr, wd] of the group's first parameter."""
    return {label: [list(step[names[0]]) for step in trace.lr_wd] for label, names in groups.items()}


def _param_diff(ours: dict[str, Tensor], theirs: dict[str, Tensor]) -> tuple[float, float]:
    """(||ours - theirs|| / ||theirs|| over all parameters, the largest per-tensor one)."""
    if set(ours) != set(theirs):
        raise AssertionError(f"different parameters: {sorted(set(ours) ^ set(theirs))[:6]}")
    diff = torch.stack([(ours[k] - theirs[k]).norm() for k in theirs]).norm()
    whole = torch.stack([theirs[k].norm() for k in theirs]).norm()
    per_tensor = max(((ours[k] - theirs[k]).norm() / theirs[k].norm().clamp_min(1e-30)).item() for k in theirs)
    return (diff / whole).item(), per_tensor


def compare(task: str, recipe: Recipe, batch: int, ours: Trace, theirs: Trace, shims: list[str]) -> TrainingComparison:
    """The differences between the two traces."""
    steps = len(theirs.losses)
    if len(ours.losses) != steps:
        raise AssertionError(f"{task}: ours ran {len(ours.losses)} steps, the published loop {steps}")
    loss_diffs = [_rel(o, t) for o, t in zip(ours.losses, theirs.losses)]
    worst = max(range(steps), key=loss_diffs.__getitem__)
    names = list(theirs.lr_wd[0])
    decays = {n: theirs.lr_wd[0][n][1] > 0 for n in names}
    groups = group_labels(names, decays, recipe.layer_decay)
    lr_diff = max(_rel(o[n][0], t[n][0]) for o, t in zip(ours.lr_wd, theirs.lr_wd) for n in names if t[n][0] > 0)
    wd_diff = max(abs(o[n][1] - t[n][1]) for o, t in zip(ours.lr_wd, theirs.lr_wd) for n in names)
    tokens = {state: ours.agreement.count(state) for state in ("same", "tie", "different")}
    whole, per_tensor = _param_diff(ours.final, theirs.final)
    return TrainingComparison(
        task=task,
        steps=steps,
        batch=batch,
        recipe=asdict(recipe),
        losses={"ours": ours.losses, "published": theirs.losses},
        grad_norms={"ours": ours.grad_norms, "published": theirs.grad_norms},
        groups=groups,
        group_lr_wd={"ours": _group_series(ours, groups), "published": _group_series(theirs, groups)},
        max_loss_rel_diff=loss_diffs[worst],
        max_loss_step=worst,
        final_param_rel_diff=whole,
        max_tensor_rel_diff=per_tensor,
        max_lr_rel_diff=lr_diff,
        max_wd_abs_diff=wd_diff,
        max_grad_norm_rel_diff=max(_rel(o, t) for o, t in zip(ours.grad_norms, theirs.grad_norms)),
        own_tokens=tokens,
        shims=shims,
    )


# ------------------------------------------------------------------------------------ rendering


def report_steps(steps: int, warmup: int) -> list[int]:
    """Three steps to show: in the warmup, the middle, the last."""
    return [max(warmup // 2, 0), steps // 2, steps - 1]


def schedule_table(results: Sequence[TrainingComparison]) -> str:
    rows = []
    for c in results:
        for step in report_steps(c.steps, c.recipe["warmup_steps"]):
            for label in c.groups:
                (lr_o, wd_o), (lr_t, wd_t) = (c.group_lr_wd[s][label][step] for s in ("ours", "published"))
                rows.append([c.task, step, label, f"{lr_t:.6g}", f"{lr_o:.6g}", f"{wd_t:.6g}", f"{wd_o:.6g}"])
    header = ["task", "step", "group", "lr published", "lr ours", "wd published", "wd ours"]
    return markdown_table(header, rows, align="lrlrrrr")


def summary_table(results: Sequence[TrainingComparison]) -> str:
    rows = [
        [
            c.task,
            c.steps,
            f"{c.max_loss_rel_diff:.2e} (step {c.max_loss_step})",
            f"{c.final_param_rel_diff:.2e}",
            f"{c.max_tensor_rel_diff:.2e}",
            f"{c.max_grad_norm_rel_diff:.2e}",
            f"{c.max_lr_rel_diff:.1e}",
            f"{c.max_wd_abs_diff:.1e}",
            f"{c.own_tokens['same']} / {c.own_tokens['tie']} / {c.own_tokens['different']}",
        ]
        for c in results
    ]
    header = [
        "task",
        "steps",
        "max rel loss diff",
        "final param rel diff",
        "worst tensor",
        "max rel grad-norm diff",
        "max rel lr diff",
        "max wd diff",
        "own tokens same / tie / different",
    ]
    return markdown_table(header, rows)


def loss_table(results: Sequence[TrainingComparison], every: int) -> str:
    rows = []
    for c in results:
        for step in sorted({*range(0, c.steps, every), c.steps - 1}):
            lo, lt = c.losses["ours"][step], c.losses["published"][step]
            go, gt = c.grad_norms["ours"][step], c.grad_norms["published"][step]
            rows.append([c.task, step, f"{lt:.6f}", f"{lo:.6f}", f"{_rel(lo, lt):.1e}", f"{gt:.5f}", f"{go:.5f}"])
    header = ["task", "step", "loss published", "loss ours", "rel diff", "grad norm published", "grad norm ours"]
    return markdown_table(header, rows)


def render(results: Sequence[TrainingComparison], device: str) -> str:
    first = results[0]
    lines = [
        f"### Published EVEREST training loop vs ours: {first.steps} steps, batch {first.batch}, "
        f"ViT {WIDTH} wide x {DEPTH} deep, {FRAMES}x{SIZE}x{SIZE} in {PATCH}px patches, fp32",
        "",
        device,
        "",
        summary_table(results),
        "",
        "lr and weight decay per parameter group (published grouping) at three steps:",
        "",
        schedule_table(results),
        "",
        "loss and gradient norm (before clipping) along the run:",
        "",
        loss_table(results, max(first.steps // 10, 1)),
        "",
        "CPU shims applied to the published code:",
        "",
        *[f"- {s}" for s in dict.fromkeys(s for c in results for s in c.shims)],
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ run


def recipe_for(task: str, steps: int) -> Recipe:
    """The task's recipe with the warmup cut to a tenth of a shorter run."""
    recipe = RECIPES[task]
    return replace(recipe, warmup_steps=min(recipe.warmup_steps, max(steps // 10, 1)))


def run_task(pub, task: str, steps: int, batch: int, dist_info, import_shims: list[str]) -> TrainingComparison:
    recipe = recipe_for(task, steps)
    batches = make_batches(steps, batch)
    torch.manual_seed(0)
    model = (
        published_pretrain(pub.modeling_pretrain, TINY, RHO, MASK_RATIO)
        if task == "pretrain"
        else published_classifier(pub.modeling_finetune, TINY, CLASSES, MCM_RATIO)
    )
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    theirs, shims = run_published(pub, task, recipe, batches, model)
    ours = run_ours(task, recipe, batches, initial, theirs, dist_info)
    return compare(task, recipe, batch, ours, theirs, import_shims + shims)


def main(published: str, tasks: Sequence[str], steps: int, batch: int, json_path: str | None, log: Callable) -> int:
    """The comparison for `tasks`; prints the tables, writes JSON when asked."""
    from everest.engine import distributed  # first of the heavy imports: selects DeepSpeed's accelerator

    pub, import_shims = import_published_training(published)
    with contextlib.redirect_stdout(sys.stderr):
        dist_info = distributed.init_distributed("cpu")
    try:
        results = []
        for task in tasks:
            log(f"{task}: {steps} steps of the published loop, then ours")
            results.append(run_task(pub, task, steps, batch, dist_info, import_shims))
    finally:
        distributed.shutdown()
    print(render(results, describe_device("cpu")))
    if json_path:
        write_json(json_path, {**environment("cpu"), "training_comparisons": [asdict(c) for c in results]})
    return 0
