"""The tests' tiny learnable stores: one copy in `ecgtune.testing`, shared with bench/."""

from ecgtune.testing import synthetic_ecgs_with_labels, write_synthetic_store, write_trial_stores

__all__ = ["synthetic_ecgs_with_labels", "write_synthetic_store", "write_trial_stores"]
