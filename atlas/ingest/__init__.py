"""The ingest stage: read data sets (h5ad, 10x, csv/tsv; human and mouse), harmonise genes and metadata
onto the atlas schema, neutrophil-aware QC, and the on-disk store. Entry point: :func:`atlas.ingest.stage.ingest`."""
