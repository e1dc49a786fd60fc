#!/usr/bin/env python3
"""The measuring half of scripts/bench-udp (read that script's header first).

One echo server process serves every row; the load generator runs in this process, so the
direct row is the ceiling of the measuring itself. CPU time of the forwarders is read from
/proc/PID/stat (utime+stime) before and after each run. Process handling (spawn, reap, kill on
the way out) is bench.py's.
"""

import argparse
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (spawn, stop, kill_all, events, wait_listening, log)

from bench import log, spawn  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def echo_server(port):
    """Runs forever: each datagram back to its sender, whole."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    recvfrom, sendto = s.recvfrom, s.sendto
    while True:
        data, peer = recvfrom(65535)
        sendto(data, peer)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


def client(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect(("127.0.0.1", port))
    return s


def pings(sock, n, size):
    """n round trips one at a time; returns (round trips in µs, lost)."""
    sock.settimeout(1)
    pad = bytes(max(0, size - 8))
    rtts, lost = [], 0
    for i in range(n):
        msg = struct.pack(">Q", i) + pad
        t = time.perf_counter()
        sock.send(msg)
        try:
            while True:
                data = sock.recv(65535)
                if data[:8] == msg[:8]:
                    break
        except socket.timeout:
            lost += 1
            continue
        rtts.append((time.perf_counter() - t) * 1e6)
    return rtts, lost


def windowed(sock, n, size, window):
    """n datagrams with at most `window` unanswered (by sequence number: a lost one does not
    stall the rest); returns (echoed, seconds from the first send to the last echo)."""
    sock.setblocking(False)
    pad = bytes(max(0, size - 8))
    send, recv = sock.send, sock.recv
    seq = progress = received = 0
    start = last = time.perf_counter()
    while True:
        if seq < n and seq < progress + window:
            try:
                send(struct.pack(">Q", seq) + pad)
                seq += 1
                continue
            except BlockingIOError:
                pass
        try:
            data = recv(65535)
        except BlockingIOError:
            now = time.perf_counter()
            if now - last > 0.5:
                if seq >= n:
                    break
                progress = seq  # the window was lost whole: go on
                last = now
            continue
        received += 1
        last = time.perf_counter()
        got = struct.unpack(">Q", data[:8])[0]
        if got + 1 > progress:
            progress = got + 1
        if got + 1 == n:
            break
    took = last - start
    # Late echoes of this run must not be read as the next run's.
    time.sleep(0.2)
    try:
        while recv(65535):
            pass
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return received, took


class Row:
    def __init__(self, key, name, port, pids):
        self.key, self.name, self.port, self.pids = key, name, port, pids


def start_rows(a, echo_port):
    """The forwarders, each in front of the echo server; returns the rows and their processes."""
    procs, rows = [], [Row("direct", "direct (no forwarder)", echo_port, [])]
    port = free_udp_port()
    p = spawn(["socat", f"UDP-LISTEN:{port},bind=127.0.0.1,reuseaddr", f"UDP:127.0.0.1:{echo_port}"],
              stdin=subprocess.DEVNULL)
    procs.append(p)
    rows.append(Row("socat", "socat UDP relay (no crypto)", port, [p.pid]))
    for via in ("quic", "tcp"):
        home_l = os.path.join(a.work, f"home-listen-{via}")
        home_c = os.path.join(a.work, f"home-connect-{via}")
        err_l = os.path.join(a.work, f"listen-{via}.err")
        err_c = os.path.join(a.work, f"connect-{via}.err")
        listener = spawn([a.bin, "--home", home_l, "--offline", "--json", "listen", "--port", "0",
                          "--forward-udp", f"127.0.0.1:{echo_port}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(err_l, "w"))
        procs.append(listener)
        addr = bench.wait_listening(err_l, listener)["addr"]
        port = free_udp_port()
        connector = spawn([a.bin, "--home", home_c, "--offline", "--json", "connect", "--via", via,
                           "--local-udp", f"127.0.0.1:{port}", addr],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(err_c, "w"))
        procs.append(connector)
        deadline = time.monotonic() + 10
        while not any(e.get("event") == "forwarding" for e in bench.events(err_c)):
            if connector.poll() is not None or time.monotonic() > deadline:
                with open(err_c) as f:
                    raise RuntimeError(f"warpgate connect --via {via} did not forward:\n{f.read()}")
            time.sleep(0.01)
        rows.append(Row(f"wg-{via}", f"warpgate --via {via}", port, [listener.pid, connector.pid]))
    return rows, procs


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, len(xs) * p // 100)] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--pings", type=int, default=2000)
    a = ap.parse_args()

    echo_port = free_udp_port()
    echo = spawn([sys.executable, os.path.abspath(__file__), "--echo", str(echo_port)],
                 stdin=subprocess.DEVNULL)
    time.sleep(0.3)
    rows, procs = start_rows(a, echo_port)
    socks = {r.key: client(r.port) for r in rows}
    problems = []
    for r in rows:  # warm up: flows, the QUIC path MTU, caches
        rtts, lost = pings(socks[r.key], 200, 64)
        if lost == 200:
            problems.append(f"{r.name}: no echo at all")
    sizes = (64, 1200)
    rate = {(r.key, s): [] for r in rows for s in sizes}
    loss = {(r.key, s): [] for r in rows for s in sizes}
    cpu = {(r.key, s): [] for r in rows for s in sizes}
    for run in range(a.runs):
        for size in sizes:
            for r in rows:  # interleaved, so machine noise lands on every row alike
                before = cpu_seconds(r.pids)
                got, secs = windowed(socks[r.key], a.count, size, a.window)
                used = cpu_seconds(r.pids) - before
                rate[r.key, size].append(got / secs if secs > 0 else 0)
                loss[r.key, size].append((a.count - got) * 100 / a.count)
                cpu[r.key, size].append(used * 1e6 / max(got, 1))
                log(f"  run {run + 1}/{a.runs} {size} B {r.name}: {got / max(secs, 1e-9):,.0f}/s, "
                    f"{(a.count - got) * 100 / a.count:.2f}% lost, {used:.2f} CPU-s")
    # Round trips in rounds of one per row, so machine noise lands on every row alike.
    lat = {r.key: ([], 0) for r in rows}
    for _ in range(a.pings // 100):
        for r in rows:
            rtts, lost = pings(socks[r.key], 100, 64)
            lat[r.key] = (lat[r.key][0] + rtts, lat[r.key][1] + lost)
    for r in rows:
        rtts, lost = lat[r.key]
        log(f"  pings {r.name}: p50 {pct(rtts, 50):.0f} µs, {lost} lost")

    # Connectors first: each ends its session and reports its counts; its listener (one peer)
    # then ends by itself.
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for p in procs + [echo]:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p in bench.CHILDREN:
            bench.CHILDREN.remove(p)
    counted = {}
    for via in ("quic", "tcp"):
        for side in ("connect", "listen"):
            done = [e for e in bench.events(os.path.join(a.work, f"{side}-{via}.err"))
                    if e.get("event") == "done"]
            if not done:
                problems.append(f"warpgate {side} --via {via} reported no done event")
                continue
            counted[via, side] = done[-1]

    out = []
    w = out.append
    w(f"warpgate UDP forwarding on loopback ({os.environ.get('BENCH_REVISION', 'unknown build')})")
    w(f"{a.count} datagrams per run, at most {a.window} unanswered, median of {a.runs} runs; "
      f"{a.pings} round trips one at a time")
    w("")
    head = f"{'':<30}"
    for s in sizes:
        head += f" {f'{s} B dgram/s':>14} {'lost':>6} {'CPU µs':>7}"
    head += f" {'RTT p50':>8} {'p99':>7} {'added p50':>9}"
    w(head)
    direct_p50 = pct(lat["direct"][0], 50)
    for r in rows:
        line = f"{r.name:<30}"
        for s in sizes:
            c = f"{statistics.median(cpu[r.key, s]):.1f}" if r.pids else "-"
            line += (f" {statistics.median(rate[r.key, s]):>14,.0f} "
                     f"{statistics.median(loss[r.key, s]):>5.2f}% {c:>7}")
        rtts, lost = lat[r.key]
        p50, p99 = pct(rtts, 50), pct(rtts, 99)
        added = "-" if r.key == "direct" else f"{p50 - direct_p50:.0f} µs"
        line += f" {p50:>5.0f} µs {p99:>4.0f} µs {added:>9}"
        if lost:
            line += f"  ({lost} pings lost)"
        w(line)
    w("")
    for s in sizes:
        socat = statistics.median(rate["socat", s])
        for via in ("quic", "tcp"):
            mine = statistics.median(rate[f"wg-{via}", s])
            w(f"warpgate --via {via} / socat, {s} B datagrams: {mine / socat:.2f}x")
    for (via, side), d in sorted(counted.items()):
        w(f"warpgate --via {via} {side}: {d.get('datagrams_sent')} datagrams sent, "
          f"{d.get('datagrams_received')} received, dropped {d.get('dropped')}, "
          f"oversized {d.get('oversized')}, refused {d.get('refused')} (its own count)")
    w("CPU µs: CPU time of the forwarding processes per datagram echoed (both warpgate ends, "
      "both directions); RTT: one 64-byte datagram at a time")
    w("load average at end: %.2f %.2f %.2f" % os.getloadavg())
    if problems:
        w("")
        w(f"Problems ({len(problems)}):")
        for p in problems:
            w(f"   - {p}")
    print("\n".join(out), flush=True)
    return 1 if problems else 0


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--echo":
        echo_server(int(sys.argv[2]))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        sys.exit(main())
    finally:
        bench.kill_all()
