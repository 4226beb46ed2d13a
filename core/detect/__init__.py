"""Outlier detection on reviews: detectors, signals, their calibration, the ensemble, labels and reasons.

`model.OutlierModel` fits and scores; `detectors` (novelty detectors on embeddings) and `signals` (one module
per signal) give raw scores, `calibration` turns them into p-values, `ensemble` combines them into the
headline, `supervised` learns from analysts' labels, `explain` and `results` say why a review was flagged.
"""
