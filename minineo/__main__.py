"""`python -m minineo ...` (and `torchrun -m minineo ...`) is the `minineo` command."""

from minineo.cli import main

main()
