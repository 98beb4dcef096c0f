"""`python -m spikeport ...` is the `spikeport` command."""

from spikeport.cli.main import main

main()
