"""Harmonisation: gene identifiers, orthologues and the obs metadata schema."""
