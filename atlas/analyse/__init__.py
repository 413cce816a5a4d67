"""Neutrophil analysis of the integrated atlas: identification, states, reprogramming, statistics."""

from .reprogramming import ReprogrammingAxis, apply_reprogramming_axis, fit_reprogramming_axis

__all__ = ["ReprogrammingAxis", "apply_reprogramming_axis", "fit_reprogramming_axis"]
