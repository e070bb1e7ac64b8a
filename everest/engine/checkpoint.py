"""Checkpoints on top of DeepSpeed's save_checkpoint / load_checkpoint (all ranks call them).

Layout of `checkpoint.dir`:
    <prefix>epoch0003_step00000120/   one DeepSpeed tag: model/optimizer shards, plus
        everest_meta.json             the architecture (what the weight loaders read)
        everest_rank<r>.pt            per-rank RNG states and data-loader position
    everest_checkpoints.json          which tags are kept and why (top-k / last / periodic)
    latest                            the newest complete tag (DeepSpeed's own pointer file)

A tag is written completely, on every rank, before `latest` and the index move to it (each
replaced atomically), and old tags are deleted only after that. A crash mid-save therefore
leaves `latest` on the previous complete checkpoint.

Every index entry names the run that wrote it; retention only ever deletes its own run's tags.
A fresh run refuses a folder that already holds a run (`ensure_fresh_dir`): continue that run
with `--resume auto`, or give the new one its own `checkpoint.dir`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from everest.config import CheckpointConfig, ConfigError
from everest.files import META_FILE, atomic_write

if TYPE_CHECKING:  # torch-free at import: the command line checks the folder before heavy imports
    from everest.engine.distributed import DistInfo

INDEX_FILE = "everest_checkpoints.json"


def monitor_mode(monitor: str, mode: str) -> str:
    """'min' or 'max' for the monitored metric ('auto': accuracies and R^2 are maximised)."""
    if mode != "auto":
        return mode
    return "max" if any(key in monitor for key in ("acc", "r2")) else "min"


@dataclass
class ResumePoint:
    load_dir: Path
    tag: str


class CheckpointDirInUse(ConfigError):
    """A fresh run was pointed at a checkpoint folder that already holds another run."""


def held_run(checkpoint_dir: str | Path) -> str | None:
    """The newest tag of the run already in `checkpoint_dir` (None when it holds no run)."""
    path = Path(checkpoint_dir)
    if (path / "latest").is_file():
        return (path / "latest").read_text().strip() or "?"
    if (path / INDEX_FILE).is_file():
        return "?"
    tags = sorted(p.name for p in path.glob("*") if (p / META_FILE).is_file() or any(p.glob("mp_rank_*")))
    return tags[-1] if tags else None


def ensure_fresh_dir(checkpoint_dir: str | Path, resume: str | None) -> None:
    """Refuse to start a new run (no --resume) in a folder that holds one: that run's checkpoints
    and `latest` must never be replaced by a new run's."""
    if resume:
        return
    tag = held_run(checkpoint_dir)
    if tag is not None:
        raise CheckpointDirInUse(
            f"checkpoint.dir={checkpoint_dir} already holds a run (latest checkpoint {tag}); continue it with "
            f"--resume auto, or start a new run with checkpoint.dir=NEW_FOLDER (and logging.log_dir=NEW_FOLDER)"
        )


def find_resume_point(resume: str | None, checkpoint_dir: str | Path) -> ResumePoint | None:
    """'auto' -> the newest complete checkpoint in checkpoint_dir (or None: start fresh);
    a run folder -> its newest; a tag folder -> that tag."""
    if not resume:
        return None
    if resume == "auto":
        path = Path(checkpoint_dir)
        if not (path / "latest").is_file():
            return None
    else:
        path = Path(resume)
        if not path.exists():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
    if (path / "latest").is_file():
        return ResumePoint(path, (path / "latest").read_text().strip())
    if any(path.glob("mp_rank_*_model_states.pt")):
        return ResumePoint(path.parent, path.name)
    raise FileNotFoundError(f"--resume {resume}: neither a checkpoint folder with 'latest' nor a checkpoint tag")


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (e.g. a full disk); the previous one is left intact."""


class CheckpointManager:
    """Decides when to save and what to keep, per the checkpoint.* config."""

    def __init__(self, cfg: CheckpointConfig, dist_info: DistInfo, run: str):
        self.cfg = cfg
        self.dist = dist_info
        self.run = run
        self.dir = Path(cfg.dir)
        self.mode = monitor_mode(cfg.monitor, cfg.monitor_mode)
        self.others: list[dict[str, Any]] = []  # entries of other runs: kept as they are, never pruned
        self.index: list[dict[str, Any]] = []
        if (self.dir / INDEX_FILE).is_file():
            for entry in json.loads((self.dir / INDEX_FILE).read_text())["checkpoints"]:
                (self.index if entry.get("run") == run else self.others).append(entry)

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _roles(self, epoch: int, metric: float | None, final: bool) -> set[str]:
        cfg = self.cfg
        roles = set()
        if cfg.save_ckpt_freq and (epoch + 1) % cfg.save_ckpt_freq == 0:
            roles.add("periodic")
        if cfg.save_top_k > 0 and metric is not None:
            ranked = [e for e in self.index if "top_k" in e["roles"]]
            if len(ranked) < cfg.save_top_k or any(self._better(metric, e["metric"]) for e in ranked):
                roles.add("top_k")
        if (cfg.save_last and not cfg.strict_top_k) or final:
            roles.add("last")
        return roles

    def save(
        self,
        engine,
        *,
        epoch: int,
        step: int,
        metrics: dict[str, float],
        client_state: dict[str, Any],
        rank_state: dict[str, Any],
        meta: dict[str, Any],
        final: bool = False,
    ) -> str | None:
        """Save if the policy wants this epoch; returns the tag written (every rank agrees)."""
        if not self.cfg.enable:
            return None
        metric = metrics.get(self.cfg.monitor)
        roles = self._roles(epoch, metric, final)
        if not roles:
            return None
        import torch

        from everest.engine.distributed import barrier

        tag = f"{self.cfg.prefix}epoch{epoch:04d}_step{step:08d}"
        if any(e["tag"] == tag for e in self.others):
            raise CheckpointDirInUse(
                f"checkpoint.dir={self.dir}: tag {tag} belongs to another run; start this run in its own checkpoint.dir"
            )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            engine.save_checkpoint(str(self.dir), tag=tag, client_state=client_state, save_latest=False)
            torch.save(rank_state, self.dir / tag / f"everest_rank{self.dist.rank}.pt")
        except OSError as err:
            shutil.rmtree(self.dir / tag, ignore_errors=True)
            previous = (self.dir / "latest").read_text().strip() if (self.dir / "latest").is_file() else "none"
            raise CheckpointSaveError(
                f"saving checkpoint {tag} in {self.dir} failed ({err}); the previous checkpoint "
                f"({previous}) is intact and 'latest' still points to it"
            ) from err
        barrier()
        if self.dist.is_main:
            (self.dir / tag / META_FILE).write_text(json.dumps(meta, indent=2))
            self._commit(tag, epoch, step, metric, roles)
        barrier()
        return tag

    def _commit(self, tag: str, epoch: int, step: int, metric: float | None, roles: set[str]) -> None:
        for entry in self.index:
            if "last" in roles:
                entry["roles"] = [r for r in entry["roles"] if r != "last"]
        self.index = [e for e in self.index if e["tag"] != tag]
        self.index.append(
            {"tag": tag, "epoch": epoch, "step": step, "metric": metric, "roles": sorted(roles), "run": self.run}
        )
        ranked = sorted(
            (e for e in self.index if "top_k" in e["roles"]), key=lambda e: e["metric"], reverse=self.mode == "max"
        )
        for entry in ranked[self.cfg.save_top_k :]:
            entry["roles"].remove("top_k")
        if self.cfg.strict_top_k:  # only the top k survive; the new tag stays as the resume point
            for entry in self.index[:-1]:
                entry["roles"] = [r for r in entry["roles"] if r == "top_k"]
        dropped = [e["tag"] for e in self.index if not e["roles"]]
        self.index = [e for e in self.index if e["roles"]]
        index = {"checkpoints": self.others + self.index, "mode": self.mode, "monitor": self.cfg.monitor}
        atomic_write(self.dir / INDEX_FILE, lambda f: json.dump(index, f, indent=2))
        atomic_write(self.dir / "latest", lambda f: f.write(tag))
        for old in dropped:
            shutil.rmtree(self.dir / old, ignore_errors=True)

    def best(self) -> dict[str, Any] | None:
        ranked = [e for e in self.index if "top_k" in e["roles"]]
        if not ranked:
            return None
        return sorted(ranked, key=lambda e: e["metric"], reverse=self.mode == "max")[0]


def choose_checkpoint(path: str | Path) -> tuple[Path, str]:
    """What to evaluate for `path`: a run folder gives its best checkpoint by the monitored
    metric (the one fine-tuning tests), or `latest` when none was ranked; anything else
    (a tag, an exported file, a Hugging Face folder) is used as given. Returns (path, why)."""
    path = Path(path)
    if not (path / "latest").is_file():
        return path, "as given"
    latest = (path / "latest").read_text().strip()
    index = json.loads((path / INDEX_FILE).read_text()) if (path / INDEX_FILE).is_file() else {}
    entries = index.get("checkpoints", [])
    run = next((e.get("run") for e in entries if e["tag"] == latest), None)
    ranked = [
        e
        for e in entries
        if e.get("run") == run and "top_k" in e["roles"] and e.get("metric") is not None and (path / e["tag"]).is_dir()
    ]
    if not ranked:
        return path / latest, "latest (no checkpoint ranked by a monitored metric)"
    pick = max if index.get("mode", "min") == "max" else min
    best = pick(ranked, key=lambda e: e["metric"])
    return path / best["tag"], f"best by {index.get('monitor', 'the monitored metric')} = {best['metric']:.4g}"


def load_rank_state(point: ResumePoint, rank: int) -> dict[str, Any] | None:
    """A rank's RNG streams, epoch sums and loader position, read with the weights-only unpickler;
    numpy's RNG state is an array, so numpy's array reconstruction (data, not code) is allowed."""
    import numpy as np
    import torch

    from everest.models.weights import load_tensors

    path = point.load_dir / point.tag / f"everest_rank{rank}.pt"
    if not path.is_file():
        return None
    arrays = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(arrays):
        return load_tensors(path)


def read_meta(point: ResumePoint) -> dict[str, Any]:
    path = point.load_dir / point.tag / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
