"""Artifacts on disk: atomic writes and checked reads (HDF5, parquet, JSON, model files), their
provenance, the results layout and run names, a manifest's rows, YAML, progress lines, and the
results folder's lock. The bottom layer: it imports nothing else of dfkd but errors."""
