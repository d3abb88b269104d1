"""A grader: 20 submissions run in parallel, each in its own sandbox, against
the same tests; one result per submission."""

import concurrent.futures
import time

import hutch

TESTS = [("2 3\n", "5\n"), ("10 -4\n", "6\n"), ("0 0\n", "0\n")]


def submission(i):
    """Student i's program (a few are wrong, slow or greedy on purpose)."""
    if i % 7 == 3:
        return "a, b = map(int, input().split()); print(a - b)"
    if i % 7 == 5:
        return "import time; time.sleep(30)"
    if i % 7 == 6:
        return "x = [0] * (1 << 28)"
    return "a, b = map(int, input().split()); print(a + b)"


def grade(i):
    with hutch.Sandbox(memory="128m", pids=32, timeout=2) as sb:
        sb.write_file("/tmp/solution.py", submission(i))
        passed, notes = 0, []
        for given, want in TESTS:
            r = sb.run(["python3", "-I", "/tmp/solution.py"], input=given.encode())
            if r.timed_out:
                notes.append("time limit")
                break
            if r.oom_killed:
                notes.append("memory limit")
                break
            passed += r.stdout.decode() == want
    return i, passed, notes


if __name__ == "__main__":
    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = sorted(pool.map(grade, range(20)))
    for i, passed, notes in results:
        print(f"submission {i:2}: {passed}/{len(TESTS)} {' '.join(notes)}")
    print(f"graded {len(results)} submissions in {time.monotonic() - t:.1f} s")
