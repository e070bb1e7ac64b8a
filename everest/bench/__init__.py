"""The EVEREST-vs-VideoMAE benchmark: `python -m everest.bench pretrain|finetune ...`.

For one backbone, batch and clip it times the training step of every strategy (pretraining:
EVEREST motion-centric, VideoMAE tube masking, no masking; fine-tuning: MCM vs all tokens) and
reports counted FLOPs, median wall time, peak memory and tokens through encoder and decoder.
"""
