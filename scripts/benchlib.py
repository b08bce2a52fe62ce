"""What every Python benchmark script shares: the CPU model, and running a command under GNU
time for the figures each benchmark reports beside the peer's (issue 23): peak RSS, wall time,
the cores it kept busy ((user + system) / wall) and its voluntary context switches.
"""
import os
import subprocess
import sys
import tempfile

TIME_FORMAT = "%M %e %U %S %w"  # peak RSS KiB, wall s, user s, system s, voluntary switches


def cpu_model():
    """lscpu's model name (every figure is recorded with it)."""
    out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def timed(cmd, env=None, cwd=None):
    """Runs `cmd` under /usr/bin/time; exits with its stderr's tail when it fails. Returns the
    completed process (stdout and stderr as text) and a dict: `rss_mib`, `wall_s`, `cores_busy`,
    `voluntary_switches` (the whole command's)."""
    with tempfile.NamedTemporaryFile(prefix="benchlib-time-") as stats:
        proc = subprocess.run(["/usr/bin/time", "-f", TIME_FORMAT, "-o", stats.name] + list(cmd),
                              env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        if proc.returncode != 0:
            sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{proc.stderr[-4000:]}")
        rss, wall, user, system, vol = open(stats.name).read().split()[-5:]
    wall = max(float(wall), 1e-9)
    return proc, {
        "rss_mib": int(rss) / 1024,
        "wall_s": wall,
        "cores_busy": (float(user) + float(system)) / wall,
        "voluntary_switches": int(vol),
    }


def _tree(pid):
    """`pid` and every process below it (from /proc's parent links)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_usage(pid):
    """CPU seconds (user + system) and voluntary context switches so far of a running process and
    its descendants, every thread counted (for a server: read before and after a phase, the
    difference is the phase's). A wrapper that starts the real server as a child (ms-swift's
    `swift deploy`) is covered."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu, vcsw = 0.0, 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vcsw += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return cpu, vcsw


def load_average():
    return " ".join(open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    print(cpu_model(), os.cpu_count(), load_average())
