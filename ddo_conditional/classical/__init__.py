"""Classical estimators: nearest / linear / cubic, biharmonic inpainting, Gaussian priors and kriging."""
