"""ecgtune: hyperparameter sweeps for deep-learning ECG interval regression."""

__version__ = "0.1.0"
