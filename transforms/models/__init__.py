"""The models the pipeline runs: the built-in tiny builders, loading a model folder or hub id, what
each family needs (labels, defaults), and the memory plan for a device."""
