"""A shard from plan to committed files: the shard spec and its layout on disk, generating its
records, the Beam DoFn that runs it, and the sinks that write Parquet / WebDataset files."""
