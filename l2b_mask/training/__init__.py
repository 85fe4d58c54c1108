"""The model team's loop: evaluate, train and release SpecTf cloud models.

Labelled spectra come in HDF5 files (`spectra`, `labels`, `fids`, attribute `bands`) read by
chunks (`dataset`); scikit-learn computes the metrics (`metrics`); `evaluate`, `train` and
`release` are the three commands' work, `cli` their command lines. docs/training.md explains
the whole loop.
"""
