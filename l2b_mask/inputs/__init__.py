"""Readers of the L1B inputs: the SDS's ENVI rasters and the LP DAAC's netCDF-4 granules, the
scene (radiance + observation geometry), the per-pixel location and the GLT. Every input check
of the library is made here, on open."""
