"""Synthetic EMIT acquisitions for tests, demos and benchmarks: the scene model (`scene`), the
same acquisition as LP DAAC granules (`daac`), rendered cloud shadows (`shadow`) and the shadow
step's accuracy on them (`shadow_evaluation`). Nothing of the science depends on this package."""
