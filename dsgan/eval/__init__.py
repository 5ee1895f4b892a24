"""Evaluation metrics: FID/IS with the TF FID Inception, and the FD8/classifier check for the embedded digits.

Library functions only; ``dsgan eval`` and the training loop call them. See ``fid.py`` for how the sample set is
made independent of the world size, ``inception.py`` for the weights file, ``digits.py`` for the FD8 scale.
"""

from dsgan.eval.digits import DigitsReport, evaluate_digits
from dsgan.eval.features import (
    DigitsFeatures,
    FeatureExtractor,
    InceptionFeatures,
    build_extractor,
    digits_pixels,
    reference_key,
)
from dsgan.eval.fid import (
    ReferenceStats,
    dataset_statistics,
    evaluate_generator,
    load_or_compute_reference,
    sample_labels,
    sample_noise,
)
from dsgan.eval.inception import PREPROCESSING_ID, FIDInceptionV3, load_inception, preprocess
from dsgan.eval.metrics import feature_statistics, frechet_distance, gather_features, inception_score

__all__ = [
    "PREPROCESSING_ID",
    "DigitsFeatures",
    "DigitsReport",
    "FIDInceptionV3",
    "FeatureExtractor",
    "InceptionFeatures",
    "ReferenceStats",
    "build_extractor",
    "dataset_statistics",
    "digits_pixels",
    "evaluate_digits",
    "evaluate_generator",
    "feature_statistics",
    "frechet_distance",
    "gather_features",
    "inception_score",
    "load_inception",
    "load_or_compute_reference",
    "preprocess",
    "reference_key",
    "sample_labels",
    "sample_noise",
]
