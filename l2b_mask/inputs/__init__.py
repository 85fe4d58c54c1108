"""Readers of the L1B inputs: the SDS's ENVI rasters and the LP DAAC's netCDF-4 granules."""
