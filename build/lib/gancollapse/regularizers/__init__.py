"""Regularizers: loss terms and model-surgery options that plug into any GAN objective."""

from gancollapse.regularizers.base import Regularizer, Step, input_gradient

__all__ = ["Regularizer", "Step", "input_gradient"]
