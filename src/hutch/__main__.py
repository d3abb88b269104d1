from hutch.cli import entry

entry()
