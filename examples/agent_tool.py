"""A tool an agent calls to run model-written Python: isolated, without network,
with time, memory and process limits, and a plain answer whatever happens."""

import json
import sys

import hutch


def run_python(code, timeout=10.0, memory="256m"):
    with hutch.Sandbox(memory=memory, cpus=1, pids=64, network="none") as sb:
        sb.write_file("/tmp/main.py", code)
        r = sb.run(["python3", "-I", "/tmp/main.py"], cwd="/tmp", timeout=timeout)
    return {"exit_code": r.returncode, "stdout": r.stdout.decode(errors="replace"),
            "stderr": r.stderr.decode(errors="replace")[-2000:],
            "timed_out": r.timed_out, "out_of_memory": r.oom_killed,
            "seconds": round(r.duration, 3)}


if __name__ == "__main__":
    snippets = {
        "ok": "print(sum(range(10**6)))",
        "error": "import sys; print('partial'); sys.exit('bad input')",
        "loop": "while True: pass",
        "memory": "x = bytearray(1 << 30)",
        "network": "import socket; socket.getaddrinfo('example.com', 80)",
    }
    for name, code in snippets.items():
        out = run_python(code, timeout=2)
        out["stderr"] = (out["stderr"].strip().splitlines() or [""])[-1]  # its last line
        print(name, json.dumps(out))
    sys.exit(0)
