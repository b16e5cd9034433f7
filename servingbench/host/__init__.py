"""The host side: config, workloads and models, aggregation, the report, compare and publish.
These need the host extras (pydantic, pandas, Jinja2, altair) or the model extras (transformers,
torch, gguf); they may import servingbench.runtime, never the reverse."""
