"""Attachments on real containers, through the library: they run once the
init has its namespaces and before it makes its rootfs; a failing one rolls
the whole create back with its undo; delete runs the undo; and a create killed
inside an attachment leaves an entry that `delete --force` undoes."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from conftest import REPO, RUNTIME_NAME, base_config

pytestmark = pytest.mark.skipif(RUNTIME_NAME != "hutch", reason="hutch's library")

# A host-side "resource" per container: a file named after it in a directory
# the test owns, made by attach and removed by detach (which logs each call).
PRELUDE = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from hutch.container import attach
    from hutch.container.create import CreateOptions, create
    from hutch.container.lifecycle import delete, start
    from hutch.errors import HutchError
    ROOT, BUNDLE, WORK, MODE = sys.argv[2:6]

    def log(*what):
        with open(os.path.join(WORK, "log"), "a") as f:
            f.write(json.dumps(what) + "\\n")

    @attach.register
    class Thing:
        kind = "test-thing"
        def __init__(self, fail=False, die=False):
            self.fail, self.die = fail, die
        def attach(self, ctx):
            pid = ctx.pid
            # the init is there with its own namespaces, and has not made its
            # rootfs yet: its root is still the host's
            own_net = os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
            host_root = os.readlink(f"/proc/{pid}/root") == "/"
            path = os.path.join(WORK, f"{ctx.cid}.{len(ctx.record.attachments)}")
            open(path, "w").close()
            log("attach", own_net, host_root, path, pid)
            if self.die:
                os.kill(os.getpid(), 9)
            if self.fail:
                raise HutchError("the thing failed")
            return {"path": path}
        @staticmethod
        def detach(ctx, data):
            log("detach", data)
            for name in os.listdir(WORK):
                if name.startswith(ctx.cid + ".") and (data is None or
                                                      os.path.join(WORK, name) == data["path"]):
                    os.unlink(os.path.join(WORK, name))
""")


def _run(script, bundle, work, mode="", check=True):
    # files, not pipes: the container's init keeps the creator's stdio open
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script),
                            os.path.join(REPO, "src"), bundle.root, bundle.dir,
                            str(work), mode], stdout=out, stderr=err,
                           stdin=subprocess.DEVNULL, timeout=60)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read().decode(), err.read().decode()
    if check:
        assert p.returncode == 0, p.stderr
    return p


def _log(work):
    with open(work / "log") as f:
        return [json.loads(line) for line in f]


def _cgroup_paths(bundle, cid):
    with open(os.path.join(bundle.root, cid, "state.json")) as f:
        return list(json.load(f)["cgroup"]["paths"].values())


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "things"
    d.mkdir()
    return d


def test_attachments_run_before_the_rootfs_and_delete_undoes_them(bundle, work):
    bundle.write(base_config(["sleep", "100"]))
    cid = bundle.new_id()
    _run(f"""
        rec = create(ROOT, "{cid}", BUNDLE, CreateOptions(attachments=[Thing(), Thing()]))
        start(ROOT, "{cid}")
        print(json.dumps(rec["attachments"]))
    """, bundle, work)
    with open(os.path.join(bundle.root, cid, "state.json")) as f:
        entries = json.load(f)["attachments"]
    assert [e["kind"] for e in entries] == ["test-thing"] * 2
    assert sorted(os.listdir(work)) == sorted(["log", f"{cid}.1", f"{cid}.2"])
    assert [e[:3] for e in _log(work)] == [["attach", True, True]] * 2
    assert json.loads(bundle.rt("state", cid).stdout)["status"] == "running"
    cgroups = _cgroup_paths(bundle, cid)
    _run(f'delete(ROOT, "{cid}", force=True)', bundle, work)
    # newest first, each with the data its attach returned
    assert [e for e in _log(work) if e[0] == "detach"] == [
        ["detach", {"path": str(work / f"{cid}.2")}],
        ["detach", {"path": str(work / f"{cid}.1")}]]
    assert os.listdir(work) == ["log"]
    assert not os.path.exists(os.path.join(bundle.root, cid))
    assert not [p for p in cgroups if os.path.exists(p)]


def test_a_failing_attachment_rolls_the_create_back(bundle, work):
    bundle.write(base_config(["sleep", "100"]))
    cid = bundle.new_id()
    p = _run(f"""
        try:
            create(ROOT, "{cid}", BUNDLE,
                   CreateOptions(attachments=[Thing(), Thing(fail=True)]))
        except HutchError as e:
            print(e)
            sys.exit(3)
    """, bundle, work, check=False)
    assert p.returncode == 3 and p.stdout.strip() == "the thing failed", p.stderr
    log = _log(work)
    assert [e[0] for e in log] == ["attach", "attach", "detach", "detach"]
    assert log[2] == ["detach", None] and log[3][1]["path"].endswith(".1")
    assert os.listdir(work) == ["log"]
    assert not os.path.exists(os.path.join(bundle.root, cid))
    # the init the attachments saw went with it
    assert not os.path.exists(f"/proc/{log[0][4]}")


def test_a_create_killed_in_an_attachment_is_undone_by_delete_force(bundle, work):
    bundle.write(base_config(["sleep", "100"]))
    cid = bundle.new_id()
    p = _run(f"""
        create(ROOT, "{cid}", BUNDLE, CreateOptions(attachments=[Thing(), Thing(die=True)]))
    """, bundle, work, check=False)
    assert p.returncode == -9
    with open(os.path.join(bundle.root, cid, "state.json")) as f:
        rec = json.load(f)
    assert [e["data"] for e in rec["attachments"]] == [
        {"path": str(work / f"{cid}.1")}, None]
    cgroups = list(rec["cgroup"]["paths"].values())
    _run(f'delete(ROOT, "{cid}", force=True)', bundle, work)
    assert [e for e in _log(work) if e[0] == "detach"] == [
        ["detach", None], ["detach", {"path": str(work / f"{cid}.1")}]]
    assert os.listdir(work) == ["log"]
    assert not os.path.exists(os.path.join(bundle.root, cid))
    assert not [p for p in cgroups if os.path.exists(p)]


def test_an_attachment_this_hutch_cannot_resolve_keeps_the_container(bundle, work):
    """`delete` of a container whose attachment no code here can undo refuses
    (and says so) rather than forget it; --force removes it with a warning."""
    bundle.write(base_config(["sleep", "100"]))
    cid = bundle.new_id()
    _run(f'create(ROOT, "{cid}", BUNDLE, CreateOptions(attachments=[Thing()]))',
         bundle, work)
    bundle.rt("kill", cid, "KILL", check=True)
    p = bundle.rt("delete", cid)
    assert p.returncode != 0
    assert "attachment 'test-thing' is not known to this hutch" in p.stderr
    assert "the container is kept" in p.stderr
    assert os.path.exists(os.path.join(bundle.root, cid))
    p = bundle.rt("delete", "--force", cid)
    assert p.returncode == 0 and "test-thing" in p.stderr
    assert not os.path.exists(os.path.join(bundle.root, cid))
