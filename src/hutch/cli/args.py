"""A small option parser in runc's style, without argparse (which costs ~8 ms).

Accepts ``--flag=value``, ``--flag value``, ``-f value``, Go-style single-dash
long flags (``-bundle dir``), and ``--`` to end options.
"""

from ..errors import HutchError


class Usage(HutchError):
    pass


def parse(argv, spec, verb, stop_at_positional=False):
    """spec: {"--name": ("dest", kind)} with kind "bool", "str", "int" or "list".
    Returns (options dict, positional args)."""
    opts = {}
    for dest, kind in spec.values():
        opts.setdefault(dest, [] if kind == "list" else (False if kind == "bool" else None))
    pos = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            pos.extend(argv[i:])
            break
        if len(a) > 1 and a[0] == "-":
            name, eq, val = a.partition("=")
            key = name if name in spec else ("-" + name if "-" + name in spec else None)
            if key is None:
                raise Usage(f"{verb}: flag provided but not defined: {name}")
            dest, kind = spec[key]
            if kind == "bool":
                if eq:
                    if val.lower() not in ("true", "false", "1", "0"):
                        raise Usage(f"{verb}: invalid boolean value {val!r} for {name}")
                    opts[dest] = val.lower() in ("true", "1")
                else:
                    opts[dest] = True
                continue
            if not eq:
                if i >= len(argv):
                    raise Usage(f"{verb}: flag needs an argument: {name}")
                val = argv[i]
                i += 1
            if kind == "int":
                try:
                    val = int(val)
                except ValueError:
                    raise Usage(f"{verb}: invalid value {val!r} for {name}: not an "
                                "integer") from None
            if kind == "list":
                opts[dest].append(val)
            else:
                opts[dest] = val
            continue
        pos.append(a)
        if stop_at_positional:
            pos.extend(argv[i:])
            break
    return opts, pos


def failing_with_255(verb, fn, g, argv):
    """Runs a verb that starts a process of the user's (exec, enter): its own
    failures exit 255, as runc's exec does, to stand apart from the process's
    exit codes."""
    try:
        return fn(g, argv)
    except Usage:
        raise
    except (HutchError, OSError) as e:
        from .. import log
        if isinstance(e, OSError):
            e = HutchError.from_os(verb, e)
        log.error(f"{verb} failed: {e}")
        return 255


def one_id(pos, verb):
    if len(pos) != 1:
        raise Usage(f'"{verb}" requires exactly 1 argument (the container id)')
    return pos[0]
