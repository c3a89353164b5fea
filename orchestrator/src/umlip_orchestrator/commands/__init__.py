"""Implementations of the ``umlip`` subcommands (argument parsing stays in ``cli``)."""
