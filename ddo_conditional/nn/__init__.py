"""Networks: the spec's conditioning wrappers, the refiners of an interpolation, point-set encoders."""
