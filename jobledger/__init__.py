"""jobledger: decide from the artifacts whether a simulation job really finished."""

__version__ = "0.1.0"
