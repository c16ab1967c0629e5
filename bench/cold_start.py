#!/usr/bin/env python3
"""Cold start of the daemon: seconds from `vllmd serve MODEL` to the first
200 on GET /health, polled every 5 ms.

    bench/cold_start.py --vllmd build/vllmd --model DIR [--runs 3]
                        [--drop-caches] [--output-json FILE] [-- extra vllmd args]

Each run starts a fresh daemon on a port the kernel picks (--port 0; the
daemon logs the port), waits for /health, then stops it with SIGTERM.
--drop-caches empties the page cache before each run (root only: writes
/proc/sys/vm/drop_caches), for the cold-cache figure; without it the first
run warms the cache and the later ones are warm-cache figures. The daemon's
log lines with "took" or "ready" are printed, to show where the time went.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request


def one_run(args, extra):
    if args.drop_caches:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    cmd = [args.vllmd, "serve", args.model, "--port", "0", "--host", "127.0.0.1"] + extra
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log, port = [], None
    fd = proc.stderr.fileno()
    os.set_blocking(fd, False)

    def read_some():
        try:
            return os.read(fd, 65536).decode("utf-8", "replace")
        except BlockingIOError:
            return ""
    try:
        while True:
            if proc.poll() is not None:
                rest = read_some()
                raise SystemExit("vllmd exited %s:\n%s" % (proc.returncode, "".join(log) + rest))
            chunk = read_some()
            if chunk:
                log.append(chunk)
                m = re.search(r" on http://[^ ]*:(\d+)\s*$", "".join(log), re.M)
                if m:
                    port = int(m.group(1))
            if port:
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/health" % port,
                                                timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
            if time.monotonic() - t0 > args.timeout:
                raise SystemExit("no 200 on /health after %.0f s" % args.timeout)
            time.sleep(0.005)
        took = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.append(read_some())
    text = "".join(log)
    notes = [l for l in text.splitlines() if re.search(r"took|ready|loaded|captur", l)]
    return took, notes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vllmd", default="build/vllmd")
    p.add_argument("--model", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--drop-caches", action="store_true")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--output-json")
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args = p.parse_args(argv)
    times = []
    for i in range(args.runs):
        took, notes = one_run(args, extra)
        times.append(took)
        print("run %d: %.2f s to 200 on /health%s" % (
            i, took, " (page cache dropped)" if args.drop_caches else ""), flush=True)
        for n in notes:
            print("    " + n)
    print("Cold start: %s s (%s)" % (" ".join("%.2f" % t for t in times),
                                       "cold page cache" if args.drop_caches
                                       else "first run fills the page cache"), flush=True)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"model": args.model, "drop_caches": args.drop_caches,
                       "seconds": times, "extra_args": extra}, f, indent=1)


if __name__ == "__main__":
    main()
