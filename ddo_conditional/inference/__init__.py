"""Inference: the sampling plan and reconstructor, batches, evaluation, metrics, calibration fits, shrinkage, memory estimates."""
