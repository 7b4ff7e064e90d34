"""`python -m bench ...`: see bench/generation.py for the modes."""

from bench.generation import main

main()
