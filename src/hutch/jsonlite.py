"""JSON without ``import json``.

The stdlib ``json`` package imports ``re``, which costs several milliseconds on every
CLI verb.  The C accelerator ``_json`` does all the real work; this module drives it
directly.  Errors (rare) fall back to the full ``json`` module for a precise message.
"""

import _json

_WS = " \t\n\r"


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = None

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"invalid JSON constant {name}")


_scan = _json.make_scanner(_Ctx())
_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None,
                             ": ", ", ", False, False, False)
_encode_compact = _json.make_encoder(None, None, _json.encode_basestring_ascii, None,
                                     ":", ",", False, False, False)


def _decode_error(text):
    import json
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return ValueError(f"invalid JSON: {e}")
    return ValueError("invalid JSON")


def loads(text):
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    i = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, i)
    except StopIteration:
        raise _decode_error(text) from None
    except (ValueError, SystemError):
        # SystemError: the C scanner fails to raise its own error in some builds
        raise _decode_error(text) from None
    if text[end:].strip(_WS):
        raise _decode_error(text)
    return obj


def dumps(obj, compact=False):
    """Serialises dicts, lists, strings, numbers, booleans and None."""
    return "".join((_encode_compact if compact else _encode)(obj, 0))


def load_file(path):
    with open(path, "rb") as f:
        return loads(f.read())


def dumps_pretty(obj, indent="  ", level=0):
    """Indented output, as runc prints `state`."""
    pad = indent * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{_json.encode_basestring_ascii(str(k))}: "
                 f"{dumps_pretty(v, indent, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent * level + "}"
    if isinstance(obj, list) and obj:
        items = [pad + dumps_pretty(v, indent, level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + indent * level + "]"
    return dumps(obj, compact=True)
