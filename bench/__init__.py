"""meshproxy benchmarks: `python -m bench` (the end-to-end harness) and the micro-benchmarks
`bench_usage.py`, `bench_pricing.py`, `bench_ledger.py`. Figures only; nothing here asserts."""
