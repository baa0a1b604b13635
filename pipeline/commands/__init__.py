"""The ``daam-datasets`` subcommands: argument registration and ``main`` only."""
