"""Readers of the L1B inputs: the SDS's ENVI rasters and the LP DAAC's netCDF-4 granules, the
scene (radiance + observation), the per-pixel location and the GLT, and the acquisition as a
whole whichever format it came in (`acquisition`). Every input check of the library is made
here, on open; what both formats share is in `l1b`."""
