"""The benchmarks' launcher: runs a command in its own process group with a time limit, its
stdout and stderr appended to a log, and writes one line to a result file:

    exit wall_s cpu_s maxrss_kb rchar read_bytes

cpu is the command's and the children it waited for (wait4); maxrss the largest of them;
rchar and read_bytes come from /proc/PID/io (the command's own I/O plus that of every child it
reaped), -1 where the kernel does not say. Exit 124 means the time limit killed it.

    python3 benches/measure.py LIMIT_S RESULT_FILE LOG_FILE CMD...
"""
import os
import signal
import sys
import time

limit, result, log, argv = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
start = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.setpgid(0, 0)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os.execvp(argv[0], argv)
    except BaseException as e:
        os.write(2, f"cannot run {argv[0]}: {e}\n".encode())
    os._exit(127)
try:
    os.setpgid(pid, pid)
except OSError:
    pass
timed_out = False


def on_alarm(*_):
    global timed_out
    timed_out = True
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, limit)
# Wait without reaping: the exited process's /proc/PID/io is still there.
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
wall = time.monotonic() - start
signal.setitimer(signal.ITIMER_REAL, 0)
io = {}
try:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            key, value = line.split(":")
            io[key] = int(value)
except OSError:
    pass
_, status, usage = os.wait4(pid, 0)
code = 124 if timed_out else os.waitstatus_to_exitcode(status)
with open(result, "w") as f:
    f.write(
        f"{code} {wall:.3f} {usage.ru_utime + usage.ru_stime:.2f} {usage.ru_maxrss} "
        f"{io.get('rchar', -1)} {io.get('read_bytes', -1)}\n"
    )
