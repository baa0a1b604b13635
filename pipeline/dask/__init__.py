"""Beam on Dask. Imports point one way, and only the last three import Dask:

``options`` (CLI and Beam options, no Dask) → ``resources`` (threads, GPU pinning, no Dask);
``worker`` (plugin, nanny) → ``resources``; ``cluster`` (local clusters) → ``worker``, ``resources``;
``runner`` (``DaamDaskRunner``) → ``cluster``, ``options``, ``resources``, ``worker``.
This package imports none of them, so ``pipeline.dask.options`` stays light for the CLI.
"""
