"""What the EMIT SDS and the LP DAAC expect of a product, and nothing of the science: EMIT file
names, the EMIT/LP DAAC netCDF attributes, the UMM-G granule record, the product's file table."""
