#!/usr/bin/env python3
"""The measuring half of scripts/bench (read that script's header first).

Runs warpgate and its socat baselines on loopback in one process, so every figure is
printed beside its baseline from the same run. CPU time is taken from wait4() rusage of
each end (sender and receiver, user+sys), wall time from perf_counter(). Every process it
starts is recorded and killed on the way out, whatever the way out is.
"""

import argparse
import hashlib
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

MB = 1_000_000  # figures in MB/s are decimal megabytes
MiB = 1 << 20
GiB = 1 << 30

CHILDREN = []  # every process we started and have not reaped yet


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    CHILDREN.append(p)
    return p


def reap(p, timeout):
    """Wait up to `timeout` s for `p` (killing it after that).

    Returns (exit code or None if it had to be killed, CPU seconds user+sys, exit time)."""
    fd = os.pidfd_open(p.pid)
    try:
        ready, _, _ = select.select([fd], [], [], max(timeout, 0))
        t_exit = time.perf_counter()
        if not ready:
            p.kill()
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        os.close(fd)
    p.returncode = os.waitstatus_to_exitcode(status)
    CHILDREN.remove(p)
    for f in (p.stdin, p.stdout, p.stderr):
        if f:
            f.close()
    return (p.returncode if ready else None), ru.ru_utime + ru.ru_stime, t_exit


def stop(p):
    """End a server we started (SIGTERM, then SIGKILL) and reap it."""
    if p.poll() is None:
        p.terminate()
    rc, _, _ = reap(p, 3)
    return rc


def kill_all():
    for p in list(CHILDREN):
        try:
            p.kill()
            p.wait(timeout=5)
        except Exception:
            pass
        CHILDREN.remove(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp_listening(port, proc, timeout=10):
    """Poll /proc/net/tcp until something listens on 127.0.0.1:port (no probe connection,
    which would use up a one-shot socat listener)."""
    want = "0100007F:%04X" % port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before listening")
        with open("/proc/net/tcp") as f:
            for line in f:
                cols = line.split()
                if len(cols) > 3 and cols[1] == want and cols[3] == "0A":
                    return
        time.sleep(0.005)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def events(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict):
                    out.append(ev)
    except FileNotFoundError:
        pass
    return out


def wait_listening(errfile, proc, timeout=10):
    """Wait for warpgate's {"event":"listening"} line; return that event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in events(errfile):
            if ev.get("event") == "listening":
                return ev
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    with open(errfile) as f:
        raise RuntimeError("warpgate listen did not report listening:\n" + f.read())


class Bench:
    def __init__(self, a):
        self.a = a
        self.bin = a.bin
        self.work = a.work
        self.home_a = os.path.join(a.work, "home-listener")
        self.home_b = os.path.join(a.work, "home-connector")
        self.cert = os.path.join(a.work, "cert.pem")
        self.key = os.path.join(a.work, "key.pem")
        self.seq = 0
        self.problems = []  # things that went wrong, printed at the end

    def path(self, name):
        self.seq += 1
        return os.path.join(self.work, f"{self.seq:04d}-{name}")

    def wg(self, home, *args):
        # --offline: loopback only, never the public default servers.
        return [self.bin, "--home", home, "--offline", *args]

    def tls_server_opts(self):
        return f"cert={self.cert},key={self.key},verify=0,min-version=TLS1.3"

    def tls_client_opts(self):
        return f"cafile={self.cert},commonname=localhost,min-version=TLS1.3"

    def make_cert(self):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=localhost"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # ---------------------------------------------------------------- 1. throughput

    def start_receiver(self, tool):
        """Start the receiving end; return (process, connect info, stderr file)."""
        if tool in ("wg-tcp", "wg-quic"):
            err = self.path("listen.err")
            p = spawn(self.wg(self.home_a, "--json", "listen", "--port", "0"),
                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(err, "w"))
            return p, wait_listening(err, p)["addr"], err
        port = free_port()
        if tool == "socat-tcp":
            left = f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"
        else:
            left = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,{self.tls_server_opts()}"
        p = spawn(["socat", "-u", left, "STDOUT"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_tcp_listening(port, p)
        return p, port, None

    def sender_argv(self, tool, target):
        if tool == "wg-tcp":
            return self.wg(self.home_b, "-q", "connect", "--via", "tcp", target)
        if tool == "wg-quic":
            return self.wg(self.home_b, "-q", "connect", "--via", "quic", target)
        if tool == "socat-tcp":
            return ["socat", "-u", "STDIN", f"TCP:127.0.0.1:{target}"]
        return ["socat", "-u", "STDIN", f"OPENSSL-CONNECT:127.0.0.1:{target},{self.tls_client_opts()}"]

    def throughput_once(self, tool, size):
        recv, target, err = self.start_receiver(tool)
        timeout = 60 + size / (10 * MB)  # far beyond any sane speed
        t0 = time.perf_counter()
        feed = spawn(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        send = spawn(self.sender_argv(tool, target), stdin=feed.stdout, stdout=subprocess.DEVNULL)
        feed.stdout.close()
        rc_r, cpu_r, t1 = reap(recv, timeout)
        rc_s, cpu_s, _ = reap(send, max(5, timeout - (t1 - t0)))
        reap(feed, 5)
        ok = rc_r == 0 and rc_s == 0
        why = f"sender exit {rc_s}, receiver exit {rc_r} (None = hung, killed after {timeout:.0f}s)"
        if ok and err:  # warpgate says how much it received; hold it to the full size
            got = [e.get("received") for e in events(err) if e.get("event") == "done"]
            if got != [size]:
                ok, why = False, f"listener reported received={got}, expected {size}"
        return ok, why, t1 - t0, cpu_r + cpu_s

    def throughput(self):
        size = self.a.size * MiB
        tools = [("socat-tcp", "socat TCP (plain, no crypto)"),
                 ("socat-tls", "socat OPENSSL (TLS 1.3, P-256)"),
                 ("wg-tcp", "warpgate connect --via tcp"),
                 ("wg-quic", "warpgate connect --via quic")]
        res = {t: [] for t, _ in tools}
        for r in range(self.a.runs):
            for tool, name in tools:  # interleaved, so machine noise lands on every tool alike
                ok, why, secs, cpu = self.throughput_once(tool, size)
                if ok:
                    res[tool].append((size / secs / MB, cpu * GiB / size))
                    log(f"  throughput {r + 1}/{self.a.runs} {name}: {size / secs / MB:.0f} MB/s, "
                        f"{cpu:.2f} CPU-s")
                else:
                    self.problems.append(f"throughput {name} run {r + 1}: {why}")
                    log(f"  throughput {r + 1}/{self.a.runs} {name}: FAILED: {why}")
        return tools, res

    # ---------------------------------------------------------------- 2. setup time

    def setup_time(self):
        echo_port, tls_port, tcp_port = free_port(), free_port(), free_port()
        servers = []
        # A plain echo server for warpgate's --forward, and socat's own echo servers.
        servers.append(spawn(["socat", f"TCP-LISTEN:{echo_port},bind=127.0.0.1,reuseaddr,fork,nodelay",
                              "PIPE"], stdin=subprocess.DEVNULL))
        servers.append(spawn(["socat", f"OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,nodelay,"
                              f"{self.tls_server_opts()}", "PIPE"], stdin=subprocess.DEVNULL))
        servers.append(spawn(["socat", f"TCP-LISTEN:{tcp_port},bind=127.0.0.1,reuseaddr,fork,nodelay",
                              "PIPE"], stdin=subprocess.DEVNULL))
        for port, p in zip((echo_port, tls_port, tcp_port), servers):
            wait_tcp_listening(port, p)
        err = self.path("listen-keep-open.err")
        listener = spawn(self.wg(self.home_a, "--json", "listen", "--port", "0", "--keep-open",
                                 "--forward", f"127.0.0.1:{echo_port}"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(err, "w"))
        servers.append(listener)
        addr = wait_listening(err, listener)["addr"]

        variants = [
            ("socat-tcp", "socat TCP (plain, nodelay)",
             ["socat", "-", f"TCP:127.0.0.1:{tcp_port},nodelay"]),
            ("socat-tls", "socat OPENSSL (TLS 1.3, nodelay)",
             ["socat", "-", f"OPENSSL-CONNECT:127.0.0.1:{tls_port},nodelay,{self.tls_client_opts()}"]),
            ("wg", "warpgate connect (default cascade)",
             self.wg(self.home_b, "--json", "connect", addr)),
            ("wg-tcp", "warpgate connect --via tcp",
             self.wg(self.home_b, "--json", "connect", "--via", "tcp", addr)),
            ("wg-quic", "warpgate connect --via quic",
             self.wg(self.home_b, "--json", "connect", "--via", "quic", addr)),
        ]
        res = {k: [] for k, _, _ in variants}
        reported = {k: [] for k, _, _ in variants}  # warpgate's own setup_ms
        transports = {k: {} for k, _, _ in variants}
        for _, _, argv in variants:  # one warm-up each (page cache, first connections)
            self.echo_run(argv)
        for i in range(self.a.setup_runs):
            for k, name, argv in variants:
                ms, ev, why = self.echo_run(argv)
                if ms is None:
                    self.problems.append(f"setup {name} run {i + 1}: {why}")
                    continue
                res[k].append(ms)
                if ev:
                    reported[k].append(ev.get("setup_ms"))
                    tr = ev.get("transport", "?")
                    transports[k][tr] = transports[k].get(tr, 0) + 1
        hwm = read_status(listener.pid)
        connections = sum(1 for e in events(err) if e.get("event") == "connected")
        for p in servers:
            stop(p)
        return variants, res, reported, transports, (hwm, connections)

    def echo_run(self, argv, timeout=10):
        """One connect-send-echo; returns (ms to the echoed byte or None, connected event, why)."""
        t0 = time.perf_counter()
        p = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            p.stdin.write(b"x")
            p.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; the read below says so
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        t1 = time.perf_counter()
        data = os.read(p.stdout.fileno(), 1) if ready else b""
        # after the echo the peer ends the stream; the connector must then exit by itself
        rc, _, _ = reap_keep_stderr(p, 5)
        ev = None
        for line in p.stderr_text.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and e.get("event") == "connected":
                ev = e
        if data != b"x":
            return None, ev, f"no echo within {timeout}s (got {data!r}); stderr: {p.stderr_text[-300:]!r}"
        if rc != 0:
            return None, ev, f"byte echoed but exit {rc} (None = hung after EOF, killed)"
        return (t1 - t0) * 1000, ev, ""

    # ---------------------------------------------------------------- 3. transfers

    def transfers(self):
        size = self.a.transfer_size * MiB
        out = []
        for via in ("tcp", "quic"):
            for both in (False, True):
                name = f"--via {via}, {'both ways at once' if both else 'connector to listener'}"
                passed, secs = 0, []
                for i in range(self.a.transfers):
                    ok, why, t = self.transfer_once(via, size, both)
                    if ok:
                        passed += 1
                        secs.append(t)
                    else:
                        self.problems.append(f"transfer {name} #{i + 1}: {why}")
                        log(f"  transfer {name} #{i + 1}: FAILED: {why}")
                log(f"  transfers {name}: {passed}/{self.a.transfers} passed")
                out.append((name, passed, secs))
        return out

    def transfer_once(self, via, size, both, timeout=30):
        """One transfer of random data from connector to listener (and, if `both`, the other way
        at the same time); what arrives must match byte for byte (sha256), and both ends must
        exit 0 by themselves within `timeout`."""
        a_in, b_in = self.path("a.in"), self.path("b.in")
        a_out, b_out = self.path("a.out"), self.path("b.out")
        want = {}
        for path, n in ((a_in, size if both else 0), (b_in, size)):
            data = os.urandom(n)
            want[path] = hashlib.sha256(data).hexdigest()
            with open(path, "wb") as f:
                f.write(data)
        err = self.path("listen.err")
        t0 = time.perf_counter()
        with open(a_in, "rb") as ai, open(a_out, "wb") as ao, open(b_in, "rb") as bi, \
                open(b_out, "wb") as bo, open(err, "w") as ef:
            lis = spawn(self.wg(self.home_a, "--json", "listen", "--port", "0"),
                        stdin=ai, stdout=ao, stderr=ef)
            addr = wait_listening(err, lis)["addr"]
            con = spawn(self.wg(self.home_b, "-q", "connect", "--via", via, addr),
                        stdin=bi, stdout=bo, stderr=subprocess.PIPE)
            deadline = time.perf_counter() + timeout
            rc_c, _, _ = reap_keep_stderr(con, deadline - time.perf_counter())
            rc_l, _, t1 = reap(lis, deadline - time.perf_counter())
        got_a, got_b = sha256_file(a_out), sha256_file(b_out)
        got_len = os.path.getsize(a_out)
        for p in (a_in, b_in, a_out, b_out):
            os.unlink(p)
        if rc_c != 0 or rc_l != 0:
            said = [e.get("message") for e in events(err) if e.get("event") == "error"]
            def ex(rc):
                return f"hung, killed after {timeout}s" if rc is None else f"exit {rc}"
            return False, (f"connector {ex(rc_c)}, listener {ex(rc_l)}; "
                           f"listener got {got_len} of {size} bytes; "
                           f"connector said {con.stderr_text.strip()[-400:]!r}; "
                           f"listener said {said[-3:]!r}"), 0
        if got_a != want[b_in] or got_b != want[a_in]:
            return False, "data differs (sha256) from what was sent", 0
        return True, "", t1 - t0


def reap_keep_stderr(p, timeout):
    """reap() for a process whose stderr is a pipe: collects it (into p.stderr_text) while
    waiting, so a chatty process cannot block on it."""
    fd = os.pidfd_open(p.pid)
    err = b""
    watch = [fd, p.stderr]
    deadline = time.perf_counter() + timeout
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            r, _, _ = select.select(watch, [], [], left)
            if p.stderr in r:
                chunk = os.read(p.stderr.fileno(), 65536)
                err += chunk
                if not chunk:
                    watch.remove(p.stderr)
                continue
            if fd in r:
                if p.stderr in watch:
                    err += p.stderr.read()
                break
    finally:
        os.close(fd)
    rc = reap(p, 0)  # kills it if it is still running
    p.stderr_text = err.decode(errors="replace")
    return rc


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_status(pid):
    """VmHWM and VmRSS of a live process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0])
    return out


def footprint(b):
    """Idle listeners: warpgate (default listen, stdin held open) and socat OPENSSL-LISTEN."""
    err = b.path("idle.err")
    wg = spawn(b.wg(b.home_a, "--json", "listen", "--port", "0"),
               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=open(err, "w"))
    wait_listening(err, wg)
    port = free_port()
    so = spawn(["socat", f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,{b.tls_server_opts()}", "STDIO"],
               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    wait_tcp_listening(port, so)
    time.sleep(2)
    res = {"wg": read_status(wg.pid), "socat": read_status(so.pid)}
    stop(wg)
    stop(so)
    return res


# -------------------------------------------------------------------- report

def verdict(ok):
    return "PASS" if ok else "FAIL"


def med_range(xs, fmt):
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def p90(xs):
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=10, method="inclusive")[8]


def main():
    ap = argparse.ArgumentParser(description="driver of scripts/bench")
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--size", type=int, default=1024, help="MiB per throughput run")
    ap.add_argument("--runs", type=int, default=3, help="throughput runs per tool")
    ap.add_argument("--setup-runs", type=int, default=30)
    ap.add_argument("--transfers", type=int, default=20, help="per transport")
    ap.add_argument("--transfer-size", type=int, default=8, help="MiB each way")
    ap.add_argument("--only", default="throughput,setup,transfers,footprint")
    a = ap.parse_args()
    only = set(a.only.split(","))

    b = Bench(a)
    b.make_cert()
    # a first run creates both identities, outside any measurement
    subprocess.run(b.wg(b.home_a, "addr"), stdout=subprocess.DEVNULL, check=True)
    subprocess.run(b.wg(b.home_b, "addr"), stdout=subprocess.DEVNULL, check=True)

    out = []
    w = out.append
    w(f"warpgate bench: {a.bin} ({os.uname().nodename}, {os.cpu_count()} cores, "
      f"{time.strftime('%Y-%m-%d %H:%M:%S')})")
    w(f"  {os.environ.get('BENCH_REVISION', '')}")
    w("  all on loopback; MB = 10^6 bytes; CPU = user+sys of both ends (wait4 rusage)")
    w("  load average at start: %.2f %.2f %.2f (other work on this machine skews the figures)"
      % os.getloadavg())

    if "throughput" in only:
        log(f"throughput: {a.size} MiB per run, {a.runs} run(s) per tool")
        tools, res = b.throughput()
        w("")
        w(f"1. Throughput: {a.size} MiB from `head -c ... /dev/zero |` sender to receiver > /dev/null,")
        w(f"   sender start to receiver exit; median (min-max) of {a.runs} run(s), tools interleaved;")
        w(f"   socat with its default options (-u, 8 KiB buffer); warpgate listen < /dev/null")
        w(f"   {'tool':<34} {'MB/s':>20}   {'CPU-s per GiB (both ends)':>26}")
        for t, name in tools:
            mbs = [x[0] for x in res[t]]
            cpu = [x[1] for x in res[t]]
            w(f"   {name:<34} {med_range(mbs, '{:.0f}'):>20}   {med_range(cpu, '{:.2f}'):>26}")
        m = {t: statistics.median([x[0] for x in res[t]]) if res[t] else None for t, _ in tools}
        c = {t: statistics.median([x[1] for x in res[t]]) if res[t] else None for t, _ in tools}
        w("   targets:")
        if m["wg-tcp"] and m["socat-tls"]:
            r = m["wg-tcp"] / m["socat-tls"]
            w(f"   {'warpgate TCP / socat OPENSSL':<34} {r:>19.2f}x   target >= 1.20x        {verdict(r >= 1.2)}")
        if m["wg-tcp"] and m["socat-tcp"]:
            r = m["wg-tcp"] / m["socat-tcp"]
            w(f"   {'warpgate TCP / socat TCP (plain)':<34} {r:>19.2f}x   (reference, no target)")
        if m["wg-quic"]:
            r = m["wg-quic"] / 300
            w(f"   {'warpgate QUIC / 300 MB/s':<34} {r:>19.2f}x   target >= 1.00x        {verdict(r >= 1)}")
        if m["wg-quic"] and m["socat-tls"]:
            r = m["wg-quic"] / m["socat-tls"]
            w(f"   {'warpgate QUIC / socat OPENSSL':<34} {r:>19.2f}x   (reference, no target)")
        for t, name in (("wg-tcp", "warpgate TCP CPU-s per GiB"), ("wg-quic", "warpgate QUIC CPU-s per GiB")):
            if c[t] is not None:
                w(f"   {name:<34} {c[t]:>20.2f}   target <= 4.00         {verdict(c[t] <= 4)}")

    if "setup" in only:
        log(f"setup time: {a.setup_runs} runs per variant")
        variants, res, reported, transports, (hwm, conns) = b.setup_time()
        w("")
        w(f"2. Setup time: process start to the first byte echoed back (connect, send 'x', read 'x');")
        w(f"   {a.setup_runs} runs each after one warm-up, interleaved; warpgate listens with --keep-open")
        w(f"   --forward to a socat echo server; socat connects to a socat echo server (fork, PIPE)")
        w(f"   {'connector':<38} {'ok':>5} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}  warpgate's setup_ms")
        for k, name, _ in variants:
            xs = res[k]
            rep = [x for x in reported[k] if isinstance(x, (int, float))]
            extra = ""
            if rep:
                extra = f"median {statistics.median(rep):g}"
                if len(transports[k]) > 1 or k == "wg":
                    extra += " (" + ", ".join(f"{t} {n}x" for t, n in sorted(transports[k].items())) + ")"
            if xs:
                w(f"   {name:<38} {len(xs):>2}/{a.setup_runs:<2} {statistics.median(xs):>10.1f} "
                  f"{p90(xs):>8.1f} {min(xs):>8.1f}  {extra}")
            else:
                w(f"   {name:<38} {0:>2}/{a.setup_runs:<2} {'n/a':>10}")
        w("   targets:")
        if res["wg"]:
            md = statistics.median(res["wg"])
            w(f"   {'warpgate (default cascade) median':<38} {md:>10.1f} ms  target < 12 ms   {verdict(md < 12)}")
        for k, name in (("wg-tcp", "warpgate --via tcp median"), ("wg-quic", "warpgate --via quic median")):
            if res[k]:
                md = statistics.median(res[k])
                w(f"   {name:<38} {md:>10.1f} ms  target < 12 ms   {verdict(md < 12)}")
        if res["wg"] and res["socat-tls"]:
            w(f"   {'warpgate default / socat OPENSSL':<38} "
              f"{statistics.median(res['wg']) / statistics.median(res['socat-tls']):>10.2f}x (reference)")
        setup_hwm = (hwm, conns)
    else:
        setup_hwm = None

    if "transfers" in only:
        log(f"transfers: {a.transfers} per transport and direction, {a.transfer_size} MiB")
        tr = b.transfers()
        w("")
        w(f"3. Back-to-back transfers: {a.transfer_size} MiB of random data (each way when both ways),")
        w(f"   sha256-checked; both ends must exit 0 by themselves within 30 s; a fresh listener")
        w(f"   each time; ms = listener start to both ends exited")
        w(f"   {'warpgate connect':<40} {'passed':>8}   {'median ms':>9}")
        for name, passed, secs in tr:
            t = f"{statistics.median(secs) * 1000:.0f}" if secs else "n/a"
            w(f"   {name:<40} {passed:>4}/{a.transfers:<3}   {t:>9}   {verdict(passed == a.transfers)}")

    if "footprint" in only:
        log("footprint: idle listeners for 2 s")
        fp = footprint(b)
        size = os.stat(a.bin).st_size
        socat_size = os.stat("/usr/bin/socat").st_size
        w("")
        w("4. Footprint: peak RSS (VmHWM) of an idle listener 2 s after it started listening; binary size")
        w(f"   {'':<38} {'VmHWM':>10} {'VmRSS':>10}")
        w(f"   {'socat OPENSSL-LISTEN (idle)':<38} {fp['socat']['VmHWM'] / 1024:>6.1f} MiB "
          f"{fp['socat']['VmRSS'] / 1024:>6.1f} MiB")
        w(f"   {'warpgate listen (idle)':<38} {fp['wg']['VmHWM'] / 1024:>6.1f} MiB "
          f"{fp['wg']['VmRSS'] / 1024:>6.1f} MiB   target < 10 MiB   "
          f"{verdict(fp['wg']['VmHWM'] < 10 * 1024)}")
        if setup_hwm and setup_hwm[0]:
            (h, conns) = setup_hwm
            w(f"   {f'warpgate listen -k after {conns} peers':<38} {h['VmHWM'] / 1024:>6.1f} MiB "
              f"{h['VmRSS'] / 1024:>6.1f} MiB   (reference)")
        w(f"   {'/usr/bin/socat binary (dynamic)':<38} {socat_size / MB:>6.2f} MB")
        w(f"   {'warpgate release binary':<38} {size / MB:>6.2f} MB    target < 12 MB   "
          f"{verdict(size < 12 * MB)}   ({size} bytes)")

    w("")
    w("load average at end: %.2f %.2f %.2f" % os.getloadavg())
    if b.problems:
        w("")
        w(f"Problems ({len(b.problems)}):")
        for p in b.problems:
            w(f"   - {p}")
    print("\n".join(out), flush=True)
    return 1 if b.problems else 0


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        sys.exit(main())
    finally:
        kill_all()
