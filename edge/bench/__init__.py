"""edge-bench: stage budgets, end-to-end fps against people, latency, memory and temperature.

Modules: ``host`` (what machine, sensors), ``people`` (frames of n real people, paced source),
``stages`` (each stage alone), ``e2e`` (the realtime pipeline), ``report`` (table, Markdown,
plot, comparison, schema), ``cli`` (the ``edge-bench`` console script).
"""

from edge.bench.cli import main

__all__ = ["main"]
