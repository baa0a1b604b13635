"""Beam on Dask: options and resource rules without a Dask import, worker set-up, clusters, the runner."""
