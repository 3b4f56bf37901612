"""How work runs: locks, process pools or Dask, atomic file writes."""
