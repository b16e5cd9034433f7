"""servingbench: which LLM serving framework to run, for this model and workload, on this GPU."""

__version__ = "0.1.0"
