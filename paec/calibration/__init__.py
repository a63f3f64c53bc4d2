"""PAEC itself, as pure tensor functions: per-token features (`features`, detached) and
differentiable entropies (`scores`), the position mask (`mask`), the anchor-based floor
(`anchor`) and the lower-bound penalty (`penalty`), over shared numeric kernels (`kernels`).

Imports only `paec.config`, `paec.errors` and torch: no model, no data, no I/O. The method
and its formulas: docs/method.md and docs/metrics.md."""
