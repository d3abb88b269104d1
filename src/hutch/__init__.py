"""hutch: a Linux container runtime and library, written in Python.

Keep this module free of imports: every CLI verb imports it.
"""

__version__ = "0.1.0"
OCI_VERSION = "1.2.0"
