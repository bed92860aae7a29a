"""The ups command line: every subcommand over the layers below it."""
