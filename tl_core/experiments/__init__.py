"""The experiments wing: strategies compared, data-size and freeze-depth sweeps, their report."""
