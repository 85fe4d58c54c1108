"""Readers of the L1B inputs: ENVI rasters, the scene (radiance + observation geometry), the
per-pixel location and the GLT. Every input check of the library is made here, on open."""
