"""The jobs wing: the queue, the worker processes and where they run (this machine or Ray)."""
