"""`python -m streams` is `billing` (handy where the console script is not on PATH)."""

from streams.cli.main import main

main()
