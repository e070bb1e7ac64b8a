"""everest: DeepSpeed-first training of EVEREST masked video autoencoders."""

__version__ = "0.1.0"
