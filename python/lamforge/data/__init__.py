"""Data layer: demo data, the Zarr store, its frame index and curation tools."""
