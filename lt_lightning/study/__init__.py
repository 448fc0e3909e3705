"""The survey's empirical study as one command (Zhang et al., "Deep Long-Tailed Learning: A Survey", TPAMI 2023).

``lt-lightning study -c configs/study/digits_lt.yaml`` trains every method of a study YAML
(:mod:`~lt_lightning.study.config`) on the long-tailed training set and on its balanced reference set, for every seed,
through the ordinary ``fit`` / ``test`` path, caching each run (:mod:`~lt_lightning.study.grid`); then it writes
Tables 5-7, a JSON of every number and the figures (:mod:`~lt_lightning.study.report`,
:mod:`~lt_lightning.study.figures`). Relative accuracy is :mod:`~lt_lightning.study.metrics`.
"""

from lt_lightning.study.config import FAMILIES, STAGES, MethodSpec, StudyConfig, load_study, parse_study
from lt_lightning.study.metrics import mean_std, relative_accuracy, upper_reference_accuracy

__all__ = [
    "FAMILIES",
    "STAGES",
    "MethodSpec",
    "StudyConfig",
    "load_study",
    "mean_std",
    "parse_study",
    "relative_accuracy",
    "upper_reference_accuracy",
]
