"""The command line: ``python -m tl_core ...`` over the same engine."""
