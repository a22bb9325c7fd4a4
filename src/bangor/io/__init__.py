"""The only code that touches sound cards and files: devices, sources and sinks, recordings."""
