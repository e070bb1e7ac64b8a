"""Cost of a training step before launching it: FLOPs (analytical, checked against torch's
counter), model-state memory (DeepSpeed's estimators) and activation memory (measured per
token on a tiny block). `launch/estimate.py` prints `report.render(report.estimate(...))`."""

from everest.estimate.flops import StepFlops, count_flops, finetune_flops, pretrain_flops
from everest.estimate.plans import TokenPlan, finetune_plan, pretrain_plan

__all__ = [
    "StepFlops",
    "TokenPlan",
    "count_flops",
    "finetune_flops",
    "finetune_plan",
    "pretrain_flops",
    "pretrain_plan",
]
