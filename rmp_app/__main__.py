"""`python -m rmp_app`: the `rmp` command line."""

from rmp_app.cli import main

main()
