"""Masked-video pretraining as a task for the training loop.

`PretrainObjective` is what DeepSpeed wraps: patch embedding -> token selection on the detached
embeddings -> autoencoder over the selected tokens -> normalised-pixel MSE on the targets. The
random part of the selection is keyed by (seed, epoch, sample index), so a clip gets the same
masks whatever the number of ranks or a resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from everest import pretext, tokens
from everest.config import Config
from everest.data import to_model_input
from everest.engine.distributed import broadcast_object, even_batches, gather_objects, is_main_rank, print_main
from everest.engine.optim import param_groups
from everest.engine.task import StepContext, StepOutput, Task, blank_batch
from everest.metrics import add_sums, reduce_sums
from everest.models import PretrainAutoencoder
from everest.models.spec import spec_from_config
from everest.models.vit import gathered
from everest.models.weights import everest_meta
from everest.patches import denormalize_video, pixel_targets
from everest.probe import score_probe
from everest.viz import clip_picture


def _labelled(features: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
    """(features, labels, clip indices) of a batch, on the host."""
    return features.cpu(), torch.as_tensor(batch["label"]).cpu(), torch.as_tensor(batch["index"]).view(-1).cpu()


def sample_noise(index: Tensor, seed: int, epoch: int, num_tokens: int, device: torch.device) -> Tensor:
    """Uniform keys [B, N] for the random part of token selection, one stream per sample."""
    rows = []
    for sample in index.tolist():
        g = torch.Generator().manual_seed(hash((seed, epoch, int(sample))) % 2**63)
        rows.append(torch.rand(num_tokens, generator=g))
    return torch.stack(rows).to(device)


class PretrainObjective(nn.Module):
    """Autoencoder + selection + loss in one module, so that DeepSpeed's forward runs it all."""

    def __init__(self, model: PretrainAutoencoder, cfg: Config):
        super().__init__()
        self.model = model
        m = cfg.model
        self.mask_type, self.mask_ratio, self.rho = m.mask_type, m.mask_ratio, m.motion_centric_masking_ratio
        self.normalize_target = m.normalize_target
        self.register_buffer("mean", torch.tensor(cfg.data.normalize_mean), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.data.normalize_std), persistent=False)

    def select(self, embedded: Tensor, noise: Tensor) -> tokens.Selection:
        spec = self.model.spec
        return tokens.select_for_pretraining(
            embedded.detach(), spec.grid, self.mask_type, self.mask_ratio, self.rho, noise=noise
        )

    def forward(self, video: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, tokens.Selection]:
        """video [B, 3, F, H, W] normalised (fp32) -> (loss, predictions, selection). The stages
        are named ranges (torch.profiler.record_function) that profilers and benchmarks read."""
        with torch.profiler.record_function("embed+score+select"):
            weight = self.model.encoder.patch_embed.proj.weight
            video_in = video.to(weight.dtype)
            with torch.no_grad():  # every token embedded to be scored; only the visible ones learn
                scored = self.model.embed(video_in)
            selection = self.select(scored, noise)
            visible = self.model.embed(video_in, selection.visible)
        with torch.profiler.record_function("encoder"):
            latent = self.model.encode_kept(visible, selection.visible)
        with torch.profiler.record_function("decoder"):
            pred = self.model.decode(latent, selection.visible, selection.target)
        with torch.profiler.record_function("loss"):
            spec = self.model.spec
            with torch.no_grad():  # fp32 pixels of the target tubelets only
                target = pixel_targets(
                    video,
                    selection.target,
                    spec.tubelet_size,
                    spec.patch_size,
                    self.normalize_target,
                    mean=self.mean,
                    std=self.std,
                )
            loss = nn.functional.mse_loss(pred.float(), target)
        return loss, pred, selection

    def features(self, video: Tensor) -> Tensor:
        """Clip features [B, D] for the representation probe: the encoder over every token,
        its output mean-pooled. Called outside the engine's forward, where ZeRO-3 does not fetch
        the weights: every rank must call it alike (it gathers them collectively)."""
        weight = self.model.encoder.patch_embed.proj.weight
        with gathered(self.model.encoder.parameters()):
            return self.model.encoder(video.to(weight.dtype)).float().mean(dim=1)

    def encoded_visible(self, video: Tensor, visible: Tensor) -> Tensor:
        """The encoder's output tokens [B, V, D] for the `visible` tokens (collapse diagnostics);
        every rank alike, as `features`."""
        weight = self.model.encoder.patch_embed.proj.weight
        with gathered(self.model.encoder.parameters()):
            return self.model.encoder.encode(self.model.embed(video.to(weight.dtype)), visible)


class PretrainTask(Task):
    """The pretraining task the loop drives."""

    draws_pictures = True

    def __init__(self, cfg: Config, model: PretrainAutoencoder | None = None, probe_loader: Iterable | None = None):
        """`probe_loader`: the labelled train clips of the representation probe (None: no probe)."""
        self.cfg = cfg
        self.model = model or PretrainAutoencoder(spec_from_config(cfg))
        self.module = PretrainObjective(self.model, cfg)
        self.probe_loader = probe_loader if cfg.logging.probe_every_n_epochs > 0 else None
        self.probe_reference: dict[str, float] = {}  # the probe of the initial weights (step 0)
        log = cfg.logging
        self.watch = pretext.ProgressWatch(
            log.pretext_warn_after, log.pretext_warn_below, cfg.training.max_epochs, log=print_main
        )

    def param_groups(self, weight_decay: float) -> list[dict]:
        return param_groups(self.module, weight_decay)

    def _inputs(self, batch: dict[str, Any], ctx: StepContext) -> tuple[Tensor, Tensor]:
        video = to_model_input(
            batch["video"], self.cfg.data.normalize_mean, self.cfg.data.normalize_std, ctx.device, torch.float32
        )
        noise = sample_noise(batch["index"], ctx.seed, ctx.epoch, self.model.spec.num_patches, ctx.device)
        return video, noise

    def training_step(self, engine: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        video, noise = self._inputs(batch, ctx)
        loss, _, selection = engine(video, noise)
        visible, target = selection.visible.shape[1], selection.target.shape[1]
        clips = video.shape[0]
        return StepOutput(
            loss=loss, clips=clips, encoder_tokens=clips * visible, decoder_tokens=clips * (visible + target)
        )

    def dummy_batch(self) -> dict[str, Any]:
        """A one-clip batch of the right shapes (padding for ranks without evaluation data)."""
        return blank_batch(self.cfg.training.num_frames, self.cfg.model.input_size)

    @torch.no_grad()
    def evaluate(self, engine: nn.Module, batches: Iterable[dict[str, Any]], ctx: StepContext) -> dict[str, float]:
        """Validation loss next to the trivial predictors' losses on the same targets, the
        pretext progress and the encoder's within-clip token cosine on the first batch. The masks
        are those of epoch 0 every time, so the figures compare across epochs."""
        engine.eval()
        fixed = replace(ctx, epoch=0)
        spec, normalized = self.model.spec, self.cfg.model.normalize_target
        sums: dict[str, float] = {"loss": 0.0, "clips": 0.0, "cosine": 0.0, "cosine_clips": 0.0}
        probing = self.probe_loader is not None and (ctx.epoch + 1) % self.cfg.logging.probe_every_n_epochs == 0
        val_features: list[tuple[Tensor, Tensor, Tensor]] = []
        for number, (batch, real) in enumerate(even_batches(batches, ctx.device, self.dummy_batch)):
            video, noise = self._inputs(batch, fixed)
            loss, _, selection = engine(video, noise)
            # first batch only, on every rank alike (ZeRO-3 gathers the weights collectively)
            latent = engine.module.encoded_visible(video, selection.visible) if number == 0 else None
            features = engine.module.features(video) if probing else None
            if not real:
                continue
            if features is not None:
                val_features.append(_labelled(features, batch))
            clips = float(video.shape[0])
            target = pixel_targets(
                video,
                selection.target,
                spec.tubelet_size,
                spec.patch_size,
                normalized,
                mean=self.module.mean,
                std=self.module.std,
            )
            video01 = denormalize_video(video.float(), self.module.mean, self.module.std)
            baselines = pretext.trivial_losses(
                video01,
                target,
                selection.visible,
                selection.target,
                spec.tubelet_size,
                spec.patch_size,
                spec.grid[1] * spec.grid[2],
                normalized,
            )
            part = {"loss": loss.item() * clips, "clips": clips}
            part.update({f"baseline_{k}": v.sum().item() for k, v in baselines.items()})
            if latent is not None:
                part.update(cosine=pretext.token_cosine(latent).sum().item(), cosine_clips=clips)
            add_sums(sums, part)
        totals = reduce_sums(sums)
        clips = max(totals.pop("clips"), 1.0)
        metrics = {"val_loss": totals.pop("loss") / clips}
        metrics.update({f"val_{k}_loss": totals[k] / clips for k in sorted(totals) if k.startswith("baseline_")})
        baseline = metrics.get(f"val_baseline_{pretext.baseline_name(normalized)}_loss", 0.0)
        metrics["pretext_progress"] = pretext.pretext_progress(metrics["val_loss"], baseline)
        metrics["val_token_cosine"] = totals["cosine"] / max(totals["cosine_clips"], 1.0)
        self.watch.update(ctx.epoch, metrics["pretext_progress"])
        if probing:
            probe = self._probe(engine, val_features, ctx)
            metrics.update(probe)
            metrics.update(
                {
                    k.replace("_acc1", "_gain"): v - self.probe_reference[k]
                    for k, v in probe.items()
                    if k in self.probe_reference
                }
            )
        return metrics

    @torch.no_grad()
    def start(
        self, engine: nn.Module, val_batches: Iterable[dict[str, Any]] | None, ctx: StepContext
    ) -> dict[str, float]:
        """The probe of the initial weights: the reference its later figures are compared with."""
        if self.probe_loader is None or val_batches is None:
            return {}
        engine.eval()
        val_features = self._features(engine, val_batches, ctx)
        self.probe_reference = self._probe(engine, val_features, ctx)
        return dict(self.probe_reference)

    def _features(
        self, engine: nn.Module, batches: Iterable[dict[str, Any]], ctx: StepContext
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(features, labels) of this rank's clips of `batches`, every rank running as many forwards."""
        out = []
        for batch, real in even_batches(batches, ctx.device, self.dummy_batch):
            video = to_model_input(
                batch["video"], self.cfg.data.normalize_mean, self.cfg.data.normalize_std, ctx.device, torch.float32
            )
            features = engine.module.features(video)
            if real:
                out.append(_labelled(features, batch))
        return out

    def _probe(
        self, engine: nn.Module, val_features: list[tuple[Tensor, Tensor, Tensor]], ctx: StepContext
    ) -> dict[str, float]:
        """kNN and linear probe accuracy (%) on the labelled val clips, trained on the probe's
        clips: features gathered from every rank, scored once on rank 0, the figures shared."""
        train_features = self._features(engine, self.probe_loader, ctx)
        parts = gather_objects((train_features, val_features))
        result: dict[str, float] = {}
        if is_main_rank():
            log = self.cfg.logging
            result = score_probe(
                [p[0] for p in parts], [p[1] for p in parts], log.probe_knn_k, log.probe_knn_temperature
            )
        return broadcast_object(result)

    @torch.no_grad()
    def picture(self, engine: nn.Module, batch: dict[str, Any], ctx: StepContext) -> np.ndarray | None:
        engine.eval()
        video, noise = self._inputs(batch, ctx)
        _, pred, selection = engine(video, noise)
        video01 = denormalize_video(video.float(), self.module.mean, self.module.std)
        return clip_picture(video01, selection, self.model.spec, pred, self.cfg.model.normalize_target)

    def checkpoint_meta(self) -> dict[str, Any]:
        return everest_meta(self.model)

    def extra_state(self) -> dict[str, Any]:
        return {"probe_reference": self.probe_reference}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.probe_reference = dict(state.get("probe_reference", {}))
