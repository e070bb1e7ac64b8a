"""Fine-tuning (classification or regression) as a task for the training loop.

`FinetuneObjective` is what DeepSpeed wraps: patch embedding -> MCM token selection (the top
(1 - mcm_ratio) of tokens by motion score, deterministic) -> encoder over the kept tokens ->
pooled head -> loss. Mixup/CutMix (timm) for classification; MSE or L1 for regression. An
optional EMA of the weights (timm's ModelEmaV3) is what gets evaluated when enabled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from everest import tokens
from everest.config import Config, ConfigError
from everest.data import to_model_input
from everest.engine.distributed import even_batches
from everest.engine.optim import param_groups
from everest.engine.task import StepContext, StepOutput, Task, blank_batch
from everest.metrics import (
    add_sums,
    classification_metrics,
    classification_sums,
    reduce_sums,
    regression_metrics,
    regression_sums,
)
from everest.models import VideoClassifier
from everest.models.spec import spec_from_config
from everest.models.weights import everest_meta, load_into, read_weights


def build_classifier(cfg: Config) -> VideoClassifier:
    m = cfg.model
    outputs = m.num_classes if m.task_type == "classification" else m.output_dim
    return VideoClassifier(spec_from_config(cfg), outputs, m.use_mean_pooling, m.head_drop_rate, m.init_scale)


def load_pretrained_encoder(model: VideoClassifier, path: str) -> str:
    """Copy a pretrained encoder (any checkpoint format) into `model`; the decoder and any old
    head are dropped. Returns a one-line report."""
    loaded = read_weights(path)
    encoder_sd = {
        k: v for k, v in loaded.state_dict.items() if k.startswith("encoder.") and not k.startswith("encoder.head")
    }
    if not encoder_sd:
        raise ConfigError(f"model.pretrained_path={path}: holds no encoder weights")
    report = load_into(model, encoder_sd, source=path)
    missing = [k for k in report.missing if k.startswith("encoder.")]
    if missing:
        raise ConfigError(f"model.pretrained_path={path}: encoder weights missing: {missing[:6]}")
    return (
        f"loaded {len(encoder_sd) - len(report.unexpected)} encoder tensors from {path} ({loaded.source}); "
        f"new: {', '.join(k for k in report.missing) or 'none'}; unused: {', '.join(report.unexpected) or 'none'}"
    )


class FinetuneObjective(nn.Module):
    """Classifier + MCM selection + loss in one module, so that DeepSpeed's forward runs it all."""

    def __init__(self, model: VideoClassifier, cfg: Config):
        super().__init__()
        self.model = model
        m = cfg.model
        self.task_type = m.task_type
        self.mcm, self.mcm_ratio, self.mcm_at_test = m.mcm, m.mcm_ratio, m.mcm_at_test
        if m.task_type == "regression":
            self.criterion = nn.MSELoss() if m.regression_loss == "mse" else nn.L1Loss()
        else:
            self.criterion = None  # chosen per batch: soft targets under mixup, hard otherwise
        self.label_smoothing = cfg.augmentation.label_smoothing

    def outputs(self, video: Tensor) -> Tensor:
        """The forward's stages before the loss, named as in `forward`."""
        with torch.profiler.record_function("embed+score+select"):
            weight = self.model.encoder.patch_embed.proj.weight
            video = video.to(weight.dtype)
            keep = None
            if self.mcm and (self.training or self.mcm_at_test):
                with torch.no_grad():  # every token embedded to be scored; only the kept ones learn
                    scored = self.model.embed(video)
                keep = tokens.select_for_finetuning(scored, self.model.spec.grid, self.mcm_ratio).visible
            embedded = self.model.embed(video, keep)
        with torch.profiler.record_function("encoder"):  # encoder, pooling and the head
            return self.model.forward_kept(embedded, keep).float()

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        if self.task_type == "regression":
            return self.criterion(out, target.float().reshape(out.shape))
        if target.ndim > 1:  # mixed soft labels
            return torch.sum(-target * torch.log_softmax(out, dim=-1), dim=-1).mean()
        return nn.functional.cross_entropy(out, target, label_smoothing=self.label_smoothing)

    def forward(self, video: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """-> (loss, outputs); the stages are named ranges (torch.profiler.record_function):
        embed+score+select and encoder (in `outputs`), loss."""
        out = self.outputs(video)
        with torch.profiler.record_function("loss"):
            loss = self.loss(out, target)
        return loss, out


class FinetuneTask(Task):
    """The fine-tuning task the loop drives."""

    def __init__(self, cfg: Config, model: VideoClassifier | None = None, log=print):
        self.cfg = cfg
        self.model = model or build_classifier(cfg)
        if cfg.model.pretrained_path and model is None:
            log(load_pretrained_encoder(self.model, cfg.model.pretrained_path))
        self.module = FinetuneObjective(self.model, cfg)
        self.mixup = _build_mixup(cfg)
        self.ema = None

    # ---------------------------------------------------------------------------- set-up

    def param_groups(self, weight_decay: float) -> list[dict]:
        return param_groups(self.module, weight_decay, self.cfg.model.layer_decay, self.model.spec.depth)

    def on_engine_ready(self, engine: nn.Module, zero_stage: int, device: torch.device) -> None:
        """Keep an fp32 EMA of the weights (needs full parameters on every rank: ZeRO <= 2)."""
        f = self.cfg.features
        if not f.model_ema:
            return
        if zero_stage >= 3:
            raise ConfigError(
                "features.model_ema needs full parameters on every rank: use ZeRO stage 0-2 "
                "(ds_configs/zero2.json), or set features.model_ema=false"
            )
        from timm.utils import ModelEmaV3

        ema_device = "cpu" if f.model_ema_force_cpu else device
        self.ema = ModelEmaV3(engine.module, decay=f.model_ema_decay, device=ema_device)
        self.ema.module.float()

    # ----------------------------------------------------------------------------- steps

    def _inputs(self, batch: dict[str, Any], ctx: StepContext) -> tuple[Tensor, Tensor]:
        video = to_model_input(
            batch["video"], self.cfg.data.normalize_mean, self.cfg.data.normalize_std, ctx.device, torch.float32
        )
        return video, batch["label"].to(ctx.device)

    def training_step(self, engine: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        video, target = self._inputs(batch, ctx)
        hard = target
        if self.mixup is not None and self.module.training:
            video, target = mix_clips(self.mixup, video, target)
        loss, out = engine(video, target)
        sums = self._sums(out.detach(), hard)
        kept = self._kept_tokens()
        return StepOutput(loss=loss, clips=video.shape[0], encoder_tokens=video.shape[0] * kept, sums=sums)

    def after_step(self, engine: nn.Module, step: int) -> None:
        if self.ema is not None:
            self.ema.update(engine.module, step=step)

    def _kept_tokens(self) -> int:
        n = self.model.spec.num_patches
        return int((1 - self.cfg.model.mcm_ratio) * n) if self.cfg.model.mcm else n

    def _sums(self, out: Tensor, target: Tensor) -> dict[str, float]:
        if self.cfg.model.task_type == "regression":
            return regression_sums(out, target)
        return classification_sums(out, target)

    def reduce_metrics(self, sums: dict[str, float], prefix: str) -> dict[str, float]:
        if self.cfg.model.task_type == "regression":
            return regression_metrics(sums, prefix)
        return classification_metrics(sums, prefix)

    def dummy_batch(self) -> dict[str, Any]:
        """A one-clip batch of the right shapes (padding for ranks without evaluation data)."""
        m = self.cfg.model
        label = torch.zeros(1, m.output_dim) if m.task_type == "regression" else torch.zeros(1, dtype=torch.long)
        return blank_batch(self.cfg.training.num_frames, m.input_size, label)

    @torch.no_grad()
    def predict(self, module: nn.Module, batches: Iterable[dict[str, Any]], ctx: StepContext):
        """Yield (batch, outputs) for every real batch with `module` (engine or EMA) in eval
        mode; every rank runs the same number of forwards (see even_batches)."""
        module.eval()
        for batch, real in even_batches(batches, ctx.device, self.dummy_batch):
            video, target = self._inputs(batch, ctx)
            _, out = module(video, target)
            if real:
                yield batch, out

    def evaluate(self, engine: nn.Module, batches: Iterable[dict[str, Any]], ctx: StepContext) -> dict[str, float]:
        module = engine
        if self.ema is not None:  # the EMA weights are what gets evaluated
            module = self.ema.module
            ctx = replace(ctx, device=next(module.parameters()).device, dtype=torch.float32)
        sums: dict[str, float] = {}
        for batch, out in self.predict(module, batches, ctx):
            add_sums(sums, self._sums(out, batch["label"].to(ctx.device)))
        return self.reduce_metrics(reduce_sums(sums), "val_")

    def checkpoint_meta(self) -> dict[str, Any]:
        return {**everest_meta(self.model), "task_type": self.cfg.model.task_type}

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema.module.state_dict()} if self.ema is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.ema is not None and "ema" in state:
            self.ema.module.load_state_dict(state["ema"])


def mix_clips(mixup, video: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """timm Mixup/CutMix on clips [B, C, T, H, W]. timm cuts its box out of the last two dims
    of a 4-D batch; given a clip as is it would cut across frames and rows instead (and count
    the area wrongly), so frames are folded into channels: one box, the same in every frame."""
    b, c, t, h, w = video.shape
    images, target = mixup(video.reshape(b, c * t, h, w).contiguous(), target)
    return images.view(b, c, t, h, w), target


def _build_mixup(cfg: Config):
    a = cfg.augmentation
    if cfg.model.task_type != "classification" or (a.mixup <= 0 and a.cutmix <= 0):
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=a.mixup,
        cutmix_alpha=a.cutmix,
        prob=a.mixup_prob,
        switch_prob=a.mixup_switch_prob,
        label_smoothing=a.label_smoothing,
        num_classes=cfg.model.num_classes,
    )
