"""Programs that run as a framework's server process inside its container, started by an
adapter with ``python -m servingbench.runtime.frameworks.servers.NAME``: the naive Transformers server
(a torch program) and the ``transformers serve`` entry point that sets its prefix sharing.
They import the framework itself (torch, transformers), so they are neither adapters nor part of
servingbench's runtime, and adapter discovery does not look in here."""
