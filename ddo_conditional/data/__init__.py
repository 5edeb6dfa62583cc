"""Data: fixed masks (pure functions of seed and index), the fixed-mask dataset, augmentations, point geometry."""
