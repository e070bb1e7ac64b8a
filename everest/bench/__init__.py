"""The benchmarks, all on one timing harness (`everest.bench.timing`: warm-up, interleaved
repeats, medians, stage ranges, the table and the JSON record):

- `python -m everest.bench pretrain|finetune`: the training step of every strategy (EVEREST
  motion-centric, VideoMAE tube masking, no masking; MCM vs all tokens), run through the training
  objectives, with counted FLOPs, median wall time, peak memory, tokens and a per-stage breakdown;
- `python -m everest.bench.versus`: our step against the published EVEREST code's;
- `python -m everest.bench.gpu`: the GPU tables (the two above, several batch sizes);
- `python -m everest.bench.selection`: the token selection's share of a CPU pretraining step;
- `python -m everest.bench.data`: clips/s per data worker from the shards vs the source files;
- `python -m everest.bench.extraction`: feature extraction with and without MCM.

Kernel microbenchmarks: `python -m kernels.bench`; the transfer experiment (a runner, not a
benchmark): `python -m everest.experiments.transfer`.
"""
