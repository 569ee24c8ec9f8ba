"""rayflow: a language model's alignment lifecycle on Ray — data, training, sweeps, judges."""

__version__ = "0.1.0"
