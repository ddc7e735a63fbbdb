"""Speed comparisons with peers (not part of the installed package).

Run from the repository root: `python -m benchmarks.bench --out=benchmarks/RESULTS.md`.
"""
