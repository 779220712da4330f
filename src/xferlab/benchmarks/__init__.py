"""Benchmarks behind `make bench`. Each module holds one measurement and returns result rows:
dicts with at least `benchmark`, `value` and `unit`; a ratio with a target also carries `target`
(the bound) and `meets_target`. Figures are measured side by side in one process so that a ratio
holds on a noisy machine."""
