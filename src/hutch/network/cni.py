"""Running a CNI network configuration list for a container (CNI spec 1.0).

``--network cni:SPEC`` brings any CNI plugin: :func:`find` turns SPEC into a
conflist file, :func:`add` runs its plugins' ADD in order for a container's
network namespace, :func:`check` runs CHECK and :func:`delete` runs DEL in
reverse order.  Plugins run in the caller's network namespace, one process each,
with the request on stdin and only the ``CNI_*`` variables and a fixed PATH in
their environment.

The final ADD result is cached, with the conflist and the capability and CNI_ARGS
arguments used, in ``CACHE_DIR/NET+CID+IFNAME.json`` (names in the spec's
alphabet cannot hold ``+``), so that DEL and CHECK can send it as ``prevResult``
and DEL still works once the conflist file is gone.  The entry is written before
the first plugin runs, without a result, so that an ADD cut short by a kill is
undone by the next ADD or DEL of that attachment.

Versions: 1.0.0 and the 0.3.x/0.4.0 conflists the Debian plugins also take are
run as written (1.1.0 too, if the plugins take it).  With ``cniVersions`` the
highest version every plugin reports through VERSION is chosen.  Before 0.4.0
there is no CHECK and DEL gets no ``prevResult``, as the spec of those versions
says.
"""

import errno
import os

from ..errors import HutchError

CONFIG_DIRS = ("/etc/hutch/cni", "/etc/cni/net.d")
PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
TIMEOUT = 30
# iptables and friends, which bridge, portmap and firewall run, live in sbin
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_CONFIG = 1 << 20
CACHE_KIND = "hutch-cni-1"
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class PluginError(HutchError):
    """A plugin failed: ``plugin`` (its type), ``command`` and the CNI error
    ``code`` it reported (None when it printed no error object)."""

    def __init__(self, msg, errno=None, plugin=None, command=None, code=None):
        super().__init__(msg, errno)
        self.plugin, self.command, self.code = plugin, command, code


# -- configuration ----------------------------------------------------------------

def _is_name(s):
    # the spec's alphabet for network names and container ids; it keeps them usable
    # in file names and free of the "+" the cache's file names are split on
    return isinstance(s, str) and s != "" and s[0].isascii() and s[0].isalnum() and \
        set(s) <= NAME_CHARS


def _version(v):
    """"1.0.0" as (1, 0, 0); None if it is not a version."""
    if not isinstance(v, str):
        return None
    parts = v.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _normalise(conf, path):
    """A conflist (a single-plugin .conf wrapped into one), checked for what hutch
    relies on; plugins' own keys are left for the plugins to judge."""
    def bad(why):
        return HutchError(f"cni network config {path}: {why}", errno.EINVAL)

    if not isinstance(conf, dict):
        raise bad("not a json object")
    if "plugins" not in conf:
        if "type" not in conf:
            raise bad("neither plugins nor type")
        plugin = {k: v for k, v in conf.items() if k not in ("name", "cniVersion")}
        conf = {"name": conf.get("name"), "cniVersion": conf.get("cniVersion"),
                "plugins": [plugin]}
    name = conf.get("name")
    if not _is_name(name):
        raise bad(f"network name {name!r} is not letters, digits, '_', '.' and '-' "
                  "starting with a letter or digit")
    if _version(conf.get("cniVersion")) is None:
        versions = conf.get("cniVersions")
        if not (isinstance(versions, list) and any(_version(v) for v in versions)):
            raise bad(f"cniVersion {conf.get('cniVersion')!r} is not a version "
                      "like 1.0.0")
    plugins = conf.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise bad("plugins is not a non-empty list")
    for p in plugins:
        if not isinstance(p, dict):
            raise bad("a plugin is not a json object")
        t = p.get("type")
        if not isinstance(t, str) or t in ("", ".", "..") or "/" in t or "\0" in t:
            raise bad(f"plugin type {t!r} is not a file name")
        if not isinstance(p.get("capabilities", {}), dict):
            raise bad(f"plugin {t}: capabilities is not a json object")
    return conf


def _load(path):
    import json
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG + 1)
    except OSError as e:
        raise HutchError.from_os(f"cni network config {path}", e) from None
    if len(data) > MAX_CONFIG:
        raise HutchError(f"cni network config {path}: larger than {MAX_CONFIG} bytes",
                         errno.EFBIG)
    try:
        conf = json.loads(data)
    except ValueError as e:
        raise HutchError(f"cni network config {path}: invalid json: {e}",
                         errno.EINVAL) from None
    return _normalise(conf, path)


def find(spec, config_dirs=CONFIG_DIRS):
    """The conflist file ``cni:SPEC`` means: SPEC itself when it is a path (it has a
    '/', or is a file ending in .conflist, .conf or .json), otherwise the first
    ``*.conflist``, ``*.conf`` or ``*.json`` in ``config_dirs`` (by file name in
    each) whose network is called SPEC.  Files that do not parse are skipped in
    that search, and named if SPEC is not found."""
    if not isinstance(spec, str) or not spec:
        raise HutchError("cni network: no name or config file given", errno.EINVAL)
    if "/" in spec or (spec.endswith((".conflist", ".conf", ".json")) and
                       os.path.isfile(spec)):
        if not os.path.isfile(spec):
            raise HutchError(f"cni network config {spec}: no such file", errno.ENOENT)
        _load(spec)
        return spec
    skipped = []
    for d in config_dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            if not n.endswith((".conflist", ".conf", ".json")):
                continue
            path = os.path.join(d, n)
            try:
                conf = _load(path)
            except HutchError:
                skipped.append(path)
                continue
            if conf["name"] == spec:
                return path
    why = f"cni network {spec}: not found in {', '.join(config_dirs)}"
    if skipped:
        why += f" (skipped invalid {', '.join(skipped)})"
    raise HutchError(why, errno.ENOENT)


def _check_ids(cid, ifname):
    if not _is_name(cid):
        raise HutchError(f"cni: container id {cid!r} is not letters, digits, '_', '.' "
                         "and '-' starting with a letter or digit", errno.EINVAL)
    # what the kernel takes as an interface name
    if not isinstance(ifname, str) or ifname in ("", ".", "..") or \
            len(ifname.encode()) > 15 or any(c in "/:\0" or c.isspace() for c in ifname):
        raise HutchError(f"cni: interface name {ifname!r} is not valid", errno.EINVAL)


def _port_mappings(port_mappings):
    out = []
    for m in port_mappings or ():
        if not isinstance(m, dict):
            raise HutchError(f"cni: port mapping {m!r} is not a dict", errno.EINVAL)
        pm = {}
        for k in ("hostPort", "containerPort"):
            v = m.get(k)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 65536:
                raise HutchError(f"cni: port mapping {m!r}: {k} is not a port number",
                                 errno.EINVAL)
            pm[k] = v
        proto = (m.get("protocol") or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise HutchError(f"cni: port mapping {m!r}: protocol is not tcp, udp or "
                             "sctp", errno.EINVAL)
        pm["protocol"] = proto
        if m.get("hostIP"):
            pm["hostIP"] = str(m["hostIP"])
        out.append(pm)
    return out


def _cni_args(args):
    """CNI_ARGS from a dict or (key, value) pairs.  The Go plugins refuse keys they
    do not know unless IgnoreUnknown is set, so hutch sets it, as runtimes do."""
    if not args:
        return ""
    pairs = list(args.items()) if isinstance(args, dict) else list(args)
    out = []
    for pair in pairs:
        k, v = pair
        k, v = str(k), str(v)
        if not k or any(c in "=;\0" for c in k) or any(c in ";\0" for c in v):
            raise HutchError(f"cni: argument {k}={v} has a '=' in its key or a ';'",
                             errno.EINVAL)
        out.append(f"{k}={v}")
    if not any(p.split("=", 1)[0] == "IgnoreUnknown" for p in out):
        out.insert(0, "IgnoreUnknown=1")
    return ";".join(out)


# -- results ------------------------------------------------------------------------

def _current(result):
    """A result with ``ips`` (each with ``address``) and ``interfaces``: 0.1.0 and
    0.2.0 results' ``ip4``/``ip6`` become ``ips``; later shapes already have them."""
    r = dict(result)
    if "ips" not in r and ("ip4" in r or "ip6" in r):
        ips, routes = [], list(r.get("routes") or [])
        for k in ("ip4", "ip6"):
            ipc = r.pop(k, None)
            if isinstance(ipc, dict) and ipc.get("ip"):
                ip = {"address": ipc["ip"]}
                if ipc.get("gateway"):
                    ip["gateway"] = ipc["gateway"]
                ips.append(ip)
                routes += ipc.get("routes") or []
        r["ips"], r["routes"] = ips, routes
    r.setdefault("ips", [])
    r.setdefault("interfaces", [])
    return r


def _as_version(result, version):
    """A cached result sent as prevResult in ``version``: the same result when the
    version is unchanged, else with each ip's ``version`` added (0.3.x, 0.4.0) or
    dropped (1.0.0 on)."""
    if result.get("cniVersion") == version:
        return result
    r = _current(result)
    r["cniVersion"] = version
    ips = []
    for ip in r["ips"]:
        ip = dict(ip)
        if _version(version) >= (1, 0, 0):
            ip.pop("version", None)
        else:
            ip.setdefault("version", "6" if ":" in str(ip.get("address")) else "4")
        ips.append(ip)
    r["ips"] = ips
    return r


# -- plugins ------------------------------------------------------------------------

def _plugin_path(net, ptype, plugin_dirs):
    for d in plugin_dirs:
        p = os.path.join(d, ptype)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise HutchError(f"cni network {net}: plugin {ptype}: not found in "
                     f"{', '.join(plugin_dirs)}", errno.ENOENT)


def _error_object(out):
    import json
    try:
        e = json.loads(out)
    except ValueError:
        return None
    if isinstance(e, dict) and ("code" in e or "msg" in e):
        return e
    return None


def _exec(path, stdin, env, timeout):
    """Runs a plugin in a session of its own (a delegated IPAM plugin is killed with
    it on a timeout); (returncode, stdout, stderr), returncode None on a timeout."""
    import signal
    import subprocess
    p = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd="/", close_fds=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass   # a grandchild in another session keeps the pipes open
        p.kill()
        p.wait()
        return None, b"", b""
    except BaseException:
        p.kill()
        p.wait()
        raise
    return p.returncode, out, err


class _Attachment:
    """One (network, container, interface) and the parameters every plugin of the
    network gets for it."""

    def __init__(self, conf, version, cid, netns, ifname, plugin_dirs, caps, cni_args,
                 timeout):
        self.conf, self.net, self.version = conf, conf["name"], version
        self.cid, self.netns, self.ifname = cid, netns, ifname
        self.plugin_dirs, self.caps, self.cni_args = plugin_dirs, caps, cni_args
        self.timeout = timeout

    def request(self, plugin, prev):
        req = {k: v for k, v in plugin.items() if k not in ("capabilities", "prevResult")}
        req["cniVersion"] = self.version
        req["name"] = self.net
        rc = {k: self.caps[k] for k, on in plugin.get("capabilities", {}).items()
              if on is True and k in self.caps}
        if rc:
            req["runtimeConfig"] = rc
        if prev is not None:
            req["prevResult"] = _as_version(prev, self.version)
        return req

    def env(self, command):
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": self.cid,
               "CNI_IFNAME": self.ifname, "CNI_PATH": ":".join(self.plugin_dirs),
               "PATH": PATH}
        if self.netns:
            env["CNI_NETNS"] = self.netns
        if self.cni_args:
            env["CNI_ARGS"] = self.cni_args
        return env

    def run(self, command, plugin, prev=None, path=None):
        """Runs one plugin; its result for ADD, None otherwise."""
        import json
        ptype = plugin["type"]
        what = f"cni network {self.net}: plugin {ptype}"
        path = path or _plugin_path(self.net, ptype, self.plugin_dirs)
        stdin = json.dumps(self.request(plugin, prev)).encode()
        try:
            rc, out, err = _exec(path, stdin, self.env(command), self.timeout)
        except OSError as e:
            raise HutchError.from_os(f"{what}: run {path}", e) from None
        if rc is None:
            raise PluginError(f"{what}: {command} did not finish within {self.timeout} s",
                              errno.ETIMEDOUT, ptype, command)
        if rc != 0:
            e = _error_object(out) or _error_object(err)
            if e is None:
                lines = err.decode(errors="replace").strip().splitlines()
                if lines:
                    how = lines[-1]
                else:
                    how = f"exited with {rc}" if rc > 0 else f"killed by signal {-rc}"
                raise PluginError(f"{what}: {command} failed: {how}", errno.EIO, ptype,
                                  command)
            code, msg, details = e.get("code"), e.get("msg") or "", e.get("details")
            text = f"{what}: {command} failed: " + \
                (f"code {code}: {msg}" if code is not None else msg)
            if details and details != msg:
                text += f": {details}"
            raise PluginError(text, errno.EAGAIN if code == 11 else errno.EIO, ptype,
                              command, code)
        if command != "ADD":
            return None
        try:
            result = json.loads(out)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            raise PluginError(f"{what}: ADD printed no result", errno.EIO, ptype, command)
        return result

    def delete(self, plugins, prev):
        """DEL for ``plugins`` in reverse order, each run whatever the others did;
        the errors, as text."""
        if _version(self.version) < (0, 4, 0):
            prev = None   # DEL had no prevResult before 0.4.0
        errors = []
        for plugin in reversed(plugins):
            try:
                self.run("DEL", plugin, prev)
            except HutchError as e:
                errors.append(str(e))
        return errors


def _pick_version(conf, plugin_dirs, timeout):
    """The version to run ``conf`` in: its cniVersion, or with cniVersions the highest
    of them all plugins support (asked with VERSION)."""
    import json
    listed = conf.get("cniVersions")
    candidates = {v for v in (listed if isinstance(listed, list) else []) if _version(v)}
    if _version(conf.get("cniVersion")):
        candidates.add(conf["cniVersion"])
    if len(candidates) == 1:
        return candidates.pop()
    net = conf["name"]
    for ptype in dict.fromkeys(p["type"] for p in conf["plugins"]):
        path = _plugin_path(net, ptype, plugin_dirs)
        asked = max(candidates, key=_version)
        try:
            rc, out, _ = _exec(path, json.dumps({"cniVersion": asked}).encode(),
                               {"CNI_COMMAND": "VERSION", "PATH": PATH}, timeout)
        except OSError as e:
            raise HutchError.from_os(f"cni network {net}: plugin {ptype}: run {path}",
                                     e) from None
        try:
            supported = json.loads(out)["supportedVersions"] if rc == 0 else None
        except (ValueError, KeyError, TypeError):
            supported = None
        if not isinstance(supported, list):
            raise PluginError(f"cni network {net}: plugin {ptype}: VERSION failed",
                              errno.EIO, ptype, "VERSION")
        candidates &= set(supported)
        if not candidates:
            raise HutchError(f"cni network {net}: no version in cniVersions is "
                             f"supported by plugin {ptype}", errno.EINVAL)
    return max(candidates, key=_version)


# -- cache ----------------------------------------------------------------------------

def _entry_path(cache_dir, net, cid, ifname):
    return os.path.join(cache_dir, f"{net}+{cid}+{ifname}.json")


class _Lock:
    """An flock on ``CACHE_DIR/NAME``, a file removed on release (a waiter that then
    finds it gone or replaced opens it again).

    Two are taken.  ``NET+CID.lock``, around ADD, CHECK and DEL: the spec forbids
    running them at once for one container.  ``plugins.lock``, inside it, around
    ADD and DEL: the plugins of different containers never run at once either.
    The spec allows them to, and host-local's own flock on its store keeps two
    containers from getting one address; but bridge (ipMasq), portmap and firewall
    share iptables chains between containers and create them with a check then an
    ``iptables -N`` that with iptables-nft can fail "CHAIN_USER_ADD failed (File
    exists)" (exit 4, which the plugins only forgive as exit 1) when two run at
    once.  That is what failed in nerdctl #3518 and #2908, and nerdctl's answer
    (#3522) was a global lock too.  It costs start-up parallelism, about a tenth of
    a second per container with those plugins, and covers only hutch's own
    invocations sharing ``cache_dir``."""

    def __init__(self, cache_dir, name):
        self.path = os.path.join(cache_dir, name)
        self.cache_dir, self.fd = cache_dir, None

    def __enter__(self):
        from ..linux.fs import lock_current
        try:
            os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
            self.fd = lock_current(self.path, os.O_RDWR | os.O_CREAT)
            return self
        except OSError as e:
            raise HutchError.from_os(f"cni: lock {self.path}", e) from None

    def __exit__(self, *exc):
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)


def _locks(cache_dir, net, cid, plugins=True):
    import contextlib
    with contextlib.ExitStack() as stack:
        stack.enter_context(_Lock(cache_dir, f"{net}+{cid}.lock"))
        if plugins:
            stack.enter_context(_Lock(cache_dir, "plugins.lock"))
        return stack.pop_all()


def _read_entry(path):
    import json
    try:
        with open(path, "rb") as f:
            entry = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("kind") != CACHE_KIND or \
            not _version(entry.get("cniVersion")) or \
            not isinstance(entry.get("containerId"), str) or \
            not isinstance(entry.get("ifName"), str) or \
            not isinstance(entry.get("result"), (dict, type(None))):
        return None
    try:
        _normalise(entry.get("config"), path)
    except HutchError:
        return None
    return entry


def _write_entry(path, entry):
    import json
    data = json.dumps(entry).encode()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW |
                     os.O_CLOEXEC, 0o600)
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise HutchError.from_os(f"cni: write the cache entry {path}", e) from None


def _remove_entry(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HutchError.from_os(f"cni: remove the cache entry {path}", e) from None


def _resolve(conflist_path, cid, ifname, cache_dir):
    """(conf or None, network name or None, load error or None): the conflist from
    its file, else the name of the network a cache entry made from that file has."""
    try:
        conf = _load(conflist_path)
        return conf, conf["name"], None
    except HutchError as e:
        err = e
    want = os.path.abspath(conflist_path)
    tail = f"+{cid}+{ifname}.json"
    try:
        names = sorted(os.listdir(cache_dir))
    except OSError:
        names = []
    for n in names:
        if n.endswith(tail) and _is_name(n[:-len(tail)]):
            entry = _read_entry(os.path.join(cache_dir, n))
            if entry is not None and entry.get("path") == want:
                return None, n[:-len(tail)], err
    return None, None, err


def _attachment(entry, netns, plugin_dirs, timeout):
    return _Attachment(entry["config"], entry["cniVersion"], entry["containerId"], netns,
                       entry["ifName"], plugin_dirs, entry.get("capabilityArgs") or {},
                       entry.get("cniArgs") or "", timeout)


# -- the API --------------------------------------------------------------------------

def add(conflist_path, cid, netns_path, ifname="eth0", *, cache_dir, port_mappings=(),
        plugin_dirs=PLUGIN_DIRS, args=None, timeout=TIMEOUT):
    """Attaches container ``cid`` (network namespace ``netns_path``) to the network
    of ``conflist_path`` as ``ifname``: ADD for each plugin in order, each given the
    previous one's result.  ``port_mappings`` (dicts of hostPort, containerPort,
    protocol, hostIP) go to plugins with the portMappings capability, ``args`` (a
    dict or pairs) into CNI_ARGS.  Returns the final result, with ``ips`` and
    ``interfaces``.  If a plugin fails, DEL runs for it and those before it, in
    reverse order, and the error names the plugin and its code and message."""
    _check_ids(cid, ifname)
    if not netns_path:
        raise HutchError("cni: add needs the container's network namespace",
                         errno.EINVAL)
    conf = _load(conflist_path)
    net = conf["name"]
    caps = {}
    pms = _port_mappings(port_mappings)
    if pms:
        if not any(p.get("capabilities", {}).get("portMappings") is True
                   for p in conf["plugins"]):
            raise HutchError(f"cni network {net}: ports are published but no plugin "
                             "has the portMappings capability", errno.EINVAL)
        caps["portMappings"] = pms
    cni_args = _cni_args(args)
    plugins = conf["plugins"]
    # every binary is found before anything is done
    paths = [_plugin_path(net, p["type"], plugin_dirs) for p in plugins]
    version = _pick_version(conf, plugin_dirs, timeout)
    path = _entry_path(cache_dir, net, cid, ifname)
    with _locks(cache_dir, net, cid):
        old = _read_entry(path)
        if old is not None:
            if old.get("result") is not None:
                raise HutchError(f"cni network {net}: container {cid} is already "
                                 f"attached as {ifname}; delete it first", errno.EEXIST)
            # an ADD that never finished (hutch was killed): undo it first
            errors = _attachment(old, netns_path, plugin_dirs, timeout).delete(
                old["config"]["plugins"], None)
            if errors:
                raise HutchError(f"cni network {net}: undo an unfinished add: "
                                 f"{'; '.join(errors)}", errno.EIO)
        att = _Attachment(conf, version, cid, netns_path, ifname, plugin_dirs, caps,
                          cni_args, timeout)
        entry = {"kind": CACHE_KIND, "network": net, "containerId": cid,
                 "ifName": ifname, "netns": netns_path, "cniVersion": version,
                 "path": os.path.abspath(conflist_path), "config": conf,
                 "capabilityArgs": caps, "cniArgs": cni_args, "result": None}
        _write_entry(path, entry)
        result = None
        for i, (plugin, ppath) in enumerate(zip(plugins, paths)):
            try:
                result = att.run("ADD", plugin, result, ppath)
            except HutchError as e:
                # the failed plugin may have done half its work: it gets DEL as well
                errors = att.delete(plugins[:i + 1], result)
                if errors:
                    e.args = (f"{e}; undoing it: {'; '.join(errors)}",)
                else:
                    _remove_entry(path)
                raise
        entry["result"] = result
        _write_entry(path, entry)
    return _current(result)


def delete(conflist_path, cid, netns_path, ifname="eth0", *, cache_dir,
           plugin_dirs=PLUGIN_DIRS, timeout=TIMEOUT):
    """Detaches container ``cid`` from the network: DEL for every plugin in reverse
    order, with the cached ADD result as prevResult and the cached conflist if the
    file is gone.  ``netns_path`` may be "" once the namespace is gone.  Doing it
    again, or for what was never added, succeeds.  Every plugin runs even if
    another fails; one error names all that failed, and the cache entry is then
    kept for another try."""
    _check_ids(cid, ifname)
    conf, net, err = _resolve(conflist_path, cid, ifname, cache_dir)
    if net is None:
        if err.errno == errno.ENOENT:
            return None   # no config, nothing cached: nothing to delete
        raise err
    path = _entry_path(cache_dir, net, cid, ifname)
    with _locks(cache_dir, net, cid):
        entry = _read_entry(path)
        if entry is not None:
            att = _attachment(entry, netns_path, plugin_dirs, timeout)
            if conf is not None:
                att.conf = conf
        elif conf is not None:
            att = _Attachment(conf, _pick_version(conf, plugin_dirs, timeout), cid,
                              netns_path, ifname, plugin_dirs, {}, "", timeout)
        else:
            return None   # the cache entry went while this waited for the lock
        errors = att.delete(att.conf["plugins"], entry and entry.get("result"))
        if errors:
            raise HutchError(f"cni network {net}: delete container {cid}: "
                             f"{'; '.join(errors)}", errno.EIO)
        _remove_entry(path)
    return None


def check(conflist_path, cid, netns_path, ifname="eth0", *, cache_dir,
          plugin_dirs=PLUGIN_DIRS, timeout=TIMEOUT):
    """Asks every plugin, in order, whether the attachment is as ADD left it (CHECK,
    with the cached result).  False when nothing was checked: the conflist sets
    disableCheck, or its version (before 0.4.0) has no CHECK.  True otherwise;
    the first plugin to fail raises."""
    _check_ids(cid, ifname)
    conf, net, err = _resolve(conflist_path, cid, ifname, cache_dir)
    if net is None:
        raise err
    if conf is not None and conf.get("disableCheck") in (True, "true", "True"):
        return False
    path = _entry_path(cache_dir, net, cid, ifname)
    with _locks(cache_dir, net, cid, plugins=False):
        entry = _read_entry(path)
        if entry is None or entry.get("result") is None:
            raise HutchError(f"cni network {net}: container {cid} is not attached as "
                             f"{ifname}", errno.ENOENT)
        att = _attachment(entry, netns_path, plugin_dirs, timeout)
        if conf is not None:
            att.conf = conf
        elif att.conf.get("disableCheck") in (True, "true", "True"):
            return False
        if _version(att.version) < (0, 4, 0):
            return False
        if not netns_path:
            raise HutchError("cni: check needs the container's network namespace",
                             errno.EINVAL)
        for plugin in att.conf["plugins"]:
            att.run("CHECK", plugin, entry["result"])
    return True
