"""The entry points, one module each, every one exposing `main(argv=None) -> int`.

`launch/<name>.py` runs `everest.cli.<name>.main` (after installing the clean Ctrl-C handler);
`pip install -e .` also installs them as `everest-<name>` commands. Each module parses and checks
its arguments before importing anything heavy, so `--help` and typos answer at once.

    pretrain, finetune           training on DeepSpeed (shared options: common.py)
    evaluate, predict            multi-view testing and predictions of a fine-tuned model
    extract_features             features of a trained encoder (shared options: video_options.py)
    export, convert_weights      checkpoint consolidation and format conversion
    estimate                     memory and FLOPs of a run before launching it
    prepare_data                 videos + annotations -> litdata shards
    visualize                    reconstruction pictures
"""
