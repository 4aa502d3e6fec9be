"""Raster I/O and the grid: scene inspection and windowed reads, tile/block planning, temporary and COG
outputs, the product code tables.  No torch, no dask; everything above builds on it."""
