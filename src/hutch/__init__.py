"""hutch: a Linux container runtime and library, written in Python.

Keep this module free of imports: every CLI verb imports it.  The library's
names (``hutch.Sandbox``, ``hutch.run``, ``hutch.aio``...) load on first use.
"""

__version__ = "0.1.0"
OCI_VERSION = "1.2.0"

_LAZY = {
    "Sandbox": "sandbox.api", "run": "sandbox.api", "Process": "sandbox.process",
    "Result": "sandbox.process", "PIPE": "sandbox.process", "DEVNULL": "sandbox.process",
    "STDOUT": "sandbox.process", "Snapshot": "sandbox.snapshot",
    "HutchError": "errors", "SandboxError": "errors", "TimeoutExpired": "errors",
    "CommandFailed": "errors",
}


def __getattr__(name):
    if name == "aio":
        from . import aio
        return aio
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'hutch' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module("hutch." + where), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + ["aio"])
