"""freebits: free-bits x KL-annealing sweeps for VAEs."""

__version__ = "0.1.0"
