"""`python -m bench` / `make bench`: the end-to-end benchmark (bench/harness/runner.py)."""

from bench.harness.runner import main

raise SystemExit(main())
