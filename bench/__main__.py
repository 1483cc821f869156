"""`python -m bench`: run every benchmark (see bench/runner.py)."""

from bench.cli import main

main()
