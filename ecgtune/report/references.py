"""Published per-target figures to show beside a sweep, with what each number actually measures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """Published per-target figures, with what each number actually measures.

    `mae` maps target names to values in `TARGETS[name].unit`; a target the source does not report
    is absent. `comparable` is False where the number is not an MAE on held-out ECGs.
    """

    source: str
    setting: str
    measures: str
    mae: Mapping[str, float]
    comparable: bool


STUDY_REPO = "cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-accelerators"


_STUDY = "DeepFake->PTB-XL study, README Table V"


_STUDY_MEASURES = "its 'validation loss (MAE)' (see below)"


# What the study's numbers are, printed under the table once.
STUDY_NOTE = (
    f"The DeepFake->PTB-XL transfer study (Peradeniya/Simula; github.com/{STUDY_REPO}) reports as "
    "'MAE' the minimum validation loss over hundreds of epochs (1000 for the ResNet, 500 for the ViT) "
    "of one MSE-trained network per target, on a random split that leaks training ECGs into "
    "validation: not an error on held-out ECGs, and picked as the best of many epochs on the data it "
    "is reported on. Its DeepFake columns are on DeepFake validation ECGs, not PTB-XL."
)


# One table of published figures.
# - The study: README.md of cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-
#   accelerators (commit 1e14518c758c426765e0ad0bd7b17f4e81ba725b), "TABLE V: The summary of validation
#   losses (MAE)", all seven columns (Tables I-IV repeat them). The DeepFake columns are on DeepFake
#   ("small-deepfake") validation ECGs, not PTB-XL. The README gives no units; they are assumed to be
#   bpm/ms like the labels. Every number of Table V is here; nothing was left out.
# - Hicks et al., "Explaining deep neural networks for knowledge discovery in electrocardiogram
#   analysis", Sci Rep 11:10949 (2021), Table 3, column "Median ECG" (replication dataset; MUSE labels).
# - Alam & Stultz, "Estimating ECG Intervals from Lead-I Alone: External Validation of Supervised
#   Models", arXiv:2408.15272 (2024), abstract: internal hold-out of 4.2 M MGH ECGs. No heart rate.
REFERENCES: tuple[Reference, ...] = (
    Reference(
        _STUDY,
        "fully connected net, DeepFake only",
        _STUDY_MEASURES,
        {"hr": 55.82, "pr": 461.05, "qrs": 76.80, "qt": 1661.98},
        False,
    ),
    Reference(
        _STUDY,
        "ResNet, DeepFake only",
        _STUDY_MEASURES,
        {"hr": 0.08, "pr": 5.35, "qrs": 3.36, "qt": 3.94},
        False,
    ),
    Reference(
        _STUDY,
        "ViT, DeepFake only",
        _STUDY_MEASURES,
        {"hr": 1.80, "pr": 162.00, "qrs": 47.73, "qt": 246.70},
        False,
    ),
    Reference(
        _STUDY,
        "ResNet, PTB-XL only",
        _STUDY_MEASURES,
        {"hr": 0.10, "pr": 34.58, "qrs": 6.03, "qt": 40.55},
        False,
    ),
    Reference(
        _STUDY,
        "ViT, PTB-XL only",
        _STUDY_MEASURES,
        {"hr": 18.12, "pr": 233.50, "qrs": 50.63, "qt": 204.60},
        False,
    ),
    Reference(
        _STUDY,
        "ResNet, DeepFake -> PTB-XL (transfer)",
        _STUDY_MEASURES,
        {"hr": 0.05, "pr": 11.80, "qrs": 2.80, "qt": 16.32},
        False,
    ),
    Reference(
        _STUDY,
        "ViT, DeepFake -> PTB-XL (transfer)",
        _STUDY_MEASURES,
        {"hr": 10.88, "pr": 63.78, "qrs": 28.02, "qt": 78.55},
        False,
    ),
    Reference(
        "Hicks et al. 2021, Sci Rep 11:10949, Table 3",
        "CNN on 12-lead median beats, MUSE labels",
        "MAE on a separate replication dataset",
        {"hr": 1.57, "pr": 2.73, "qrs": 2.58, "qt": 3.13},
        True,
    ),
    Reference(
        "Alam & Stultz 2024, arXiv:2408.15272",
        "lead I only, 4.2 M ECGs (MGH)",
        "MAE on an internal hold-out set",
        {"pr": 9.2, "qrs": 6.3, "qt": 11.9},
        True,
    ),
)
