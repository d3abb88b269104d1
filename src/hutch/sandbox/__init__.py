"""The front door and the Python library: sandboxes for untrusted code.

* :mod:`.config`: a sandbox's settings and the OCI config made from them;
* :mod:`.profile`: the default seccomp profile and capability set;
* :mod:`.api`: :class:`Sandbox` and :func:`run` (``hutch.Sandbox``, ``hutch.run``);
* :mod:`.process`: a process in a sandbox and a finished one's result;
* :mod:`.files`: files into and out of a running sandbox, resolved in its root;
* :mod:`.snapshot`: checkpoints of a sandbox, and copies restored from them.

``import hutch`` loads none of these until a name is used.
"""
