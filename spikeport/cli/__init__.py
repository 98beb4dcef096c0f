"""Command line (click). Entry point: spikeport.cli.main:main."""
