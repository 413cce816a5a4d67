"""The bottom layer: errors, settings plumbing, atomic writes, logging, progress, the compute backend,
provenance and the run-directory layout. Nothing here imports another atlas package."""
