"""The fork chain, the parent/child channel and the container's init."""
