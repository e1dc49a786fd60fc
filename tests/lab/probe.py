#!/usr/bin/env python3
"""Probe helper for the warpgate NAT lab (scripts/lab, tests/lab/).

Server side, run by `scripts/lab up` in the internet namespace:
    probe.py serve IP [IP...]
  binds UDP and TCP ports 4000 and 4001 on every IP and answers
    "ECHO n"                       -> "SEEN n IP PORT" (the source it observed), same socket
    "FROM n IP PORT [TO IP PORT]"  -> "SEEN n ..." sent from the socket bound to IP:PORT to
                                      the requester's observed address (or TO, lab only)
  and on TCP writes "SEEN - IP PORT" and closes.

Client side, run inside a lab host (`scripts/lab exec HOST python3 probe.py ...`); every
command prints one JSON document on stdout:
    map A B                 source ports seen by A:4000, A:4001 and B:4000 from one socket
    filter A B              which of A:4000, A:4001, B:4000, B:4001 can reach a socket
                            that has only talked to A:4000, and an unsolicited port
    tcp IP PORT             the source a TCP connection is seen from
    rate IP COUNT           send COUNT echo requests once each, count the answers
    stun IP PORT [tcp]      a STUN binding: mapped, other and response-origin addresses
    natpmp GW PORT          NAT-PMP: external address and a UDP mapping for PORT
    expect PORT IP EPORT A B  bind PORT, ask server A to send to IP:EPORT from B:4000
                            and report whether it arrives (inbound through a port mapping)
Only lab addresses (documentation prefixes and private ranges) are ever contacted.
"""
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time

PORTS = (4000, 4001)
LAB_NETS = [ipaddress.ip_network(n) for n in (
    "203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32",
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]


def lab_only(ip):
    addr = ipaddress.ip_address(ip)
    if not any(addr in n for n in LAB_NETS):
        raise SystemExit("refusing non-lab address %s" % ip)
    return ip


def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def out(doc):
    print(json.dumps(doc), flush=True)


# ---------------------------------------------------------------- server
def serve(ips):
    udp, tcp = {}, []
    for ip in ips:
        for port in PORTS:
            u = socket.socket(family(ip), socket.SOCK_DGRAM)
            u.bind((ip, port))
            udp[(ip, port)] = u
            t = socket.socket(family(ip), socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((ip, port))
            t.listen(64)
            tcp.append(t)
    by_fd = {s.fileno(): s for s in list(udp.values()) + tcp}
    while True:
        ready, _, _ = select.select(list(by_fd.values()), [], [])
        for s in ready:
            if s.type == socket.SOCK_STREAM:
                try:
                    conn, peer = s.accept()
                    conn.sendall(("SEEN - %s %d\n" % (peer[0], peer[1])).encode())
                    conn.close()
                except OSError:
                    pass
                continue
            try:
                data, peer = s.recvfrom(2048)
                handle_udp(udp, s, data.decode(errors="replace").split(), peer)
            except (OSError, ValueError, SystemExit) as e:
                print("probe serve: %s" % e, file=sys.stderr, flush=True)


def handle_udp(udp, sock, words, peer):
    if len(words) < 2:
        return
    reply = ("SEEN %s %s %d" % (words[1], peer[0], peer[1])).encode()
    if words[0] == "ECHO":
        sock.sendto(reply, peer)
    elif words[0] == "FROM" and len(words) >= 4:
        src = udp.get((words[2], int(words[3])))
        if src is None:
            return
        dest = peer
        if len(words) >= 7 and words[4] == "TO":
            dest = (lab_only(words[5]), int(words[6]))
        src.sendto(reply, dest)


# ---------------------------------------------------------------- client
def request(sock, dest, msg, expect_from=None, tries=3, wait=0.7):
    """Send msg to dest until a SEEN answer with our nonce arrives (from expect_from)."""
    nonce = msg.split()[1]
    for _ in range(tries):
        sock.sendto(msg.encode(), dest)
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([sock], [], [], left)
            if not r:
                break
            data, src = sock.recvfrom(2048)
            words = data.decode(errors="replace").split()
            if len(words) == 4 and words[0] == "SEEN" and words[1] == nonce:
                if expect_from is None or same(src, expect_from):
                    return "%s:%s" % (bracket(words[2]), words[3])
    return None


def same(a, b):
    return ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0]) and a[1] == b[1]


def bracket(ip):
    return "[%s]" % ip if ":" in ip else ip


def nonce():
    return os.urandom(4).hex()


def client_map(a, b):
    sock = socket.socket(family(a), socket.SOCK_DGRAM)
    sock.bind(("", 0))
    seen = {}
    for ip, port in ((a, 4000), (a, 4001), (b, 4000)):
        key = "%s:%d" % (bracket(ip), port)
        seen[key] = request(sock, (lab_only(ip), port), "ECHO %s" % nonce())
    out({"local_port": sock.getsockname()[1], "seen": seen})


def bind_quiet(fam):
    """A socket on a port no other lab traffic uses: above the ephemeral range (32768-60999)
    and warpgate's derived listen ports (10000-31999). A full-cone NAT keeps a mapping for 3
    minutes after its socket closed; a quiet socket that reused such a port would receive the
    "unsolicited" packet through that stale mapping and report a full cone as open."""
    import random
    for _ in range(50):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.bind(("", random.randint(61000, 64999)))
            return s
        except OSError:
            s.close()
    raise SystemExit("no free quiet port in 61000-64999")


def client_filter(a, b):
    sock = socket.socket(family(a), socket.SOCK_DGRAM)
    sock.bind(("", 0))
    quiet = bind_quiet(family(a))
    control = (lab_only(a), 4000)
    mapped = request(sock, control, "ECHO %s" % nonce())
    result = {"mapped": mapped, "from": {}}
    if mapped is None:
        out(result)
        return
    for ip, port in ((a, 4000), (a, 4001), (b, 4000), (b, 4001)):
        key = "%s:%d" % (bracket(ip), port)
        msg = "FROM %s %s %d" % (nonce(), lab_only(ip), port)
        result["from"][key] = request(sock, control, msg, (ip, port), tries=2) is not None
    # A port that never sent anything, on the mapped address: only public hosts get this.
    mapped_ip = mapped.rsplit(":", 1)[0].strip("[]")
    msg = "FROM %s %s 4000 TO %s %d" % (nonce(), a, mapped_ip, quiet.getsockname()[1])
    sock.sendto(msg.encode(), control)
    r, _, _ = select.select([quiet], [], [], 1.0)
    result["unsolicited"] = bool(r)
    out(result)


def client_rate(ip, count):
    sock = socket.socket(family(ip), socket.SOCK_DGRAM)
    sock.bind(("", 0))
    sent, got = set(), set()

    def drain(wait):
        # read as we go: 300 unread answers would overflow the socket's receive buffer
        r, _, _ = select.select([sock], [], [], wait)
        if r:
            words = sock.recv(2048).decode(errors="replace").split()
            if len(words) == 4 and words[1] in sent:
                got.add(words[1])
    for i in range(int(count)):
        sent.add("r%d" % i)
        sock.sendto(("ECHO r%d" % i).encode(), (lab_only(ip), 4000))
        drain(0.002)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and len(got) < len(sent):
        drain(0.1)
    out({"sent": len(sent), "received": len(got)})


def client_tcp(ip, port):
    try:
        with socket.create_connection((lab_only(ip), int(port)), timeout=3) as s:
            line = s.makefile().readline().split()
        out({"seen": "%s:%s" % (bracket(line[2]), line[3])})
    except OSError as e:
        out({"seen": None, "error": str(e)})


# ---------------------------------------------------------------- STUN (RFC 5389/5780)
MAGIC = 0x2112A442


def stun_addr(value, txid, xor):
    fam, port = value[1], struct.unpack("!H", value[2:4])[0]
    raw = value[4:8] if fam == 1 else value[4:20]
    if xor:
        port ^= MAGIC >> 16
        key = struct.pack("!I", MAGIC) + txid
        raw = bytes(x ^ key[i] for i, x in enumerate(raw))
    ip = socket.inet_ntop(socket.AF_INET if fam == 1 else socket.AF_INET6, raw)
    return "%s:%d" % (bracket(ip), port)


def client_stun(ip, port, proto="udp"):
    txid = os.urandom(12)
    req = struct.pack("!HHI", 0x0001, 0, MAGIC) + txid
    dest = (lab_only(ip), int(port))
    data = None
    try:
        if proto == "tcp":
            with socket.create_connection(dest, timeout=3) as s:
                s.sendall(req)
                data = s.recv(2048)
        else:
            s = socket.socket(family(ip), socket.SOCK_DGRAM)
            s.settimeout(0.7)
            for _ in range(3):
                s.sendto(req, dest)
                try:
                    data = s.recv(2048)
                    break
                except socket.timeout:
                    continue
    except OSError as e:
        out({"ok": False, "error": str(e)})
        return
    if not data or len(data) < 20 or data[8:20] != txid:
        out({"ok": False, "error": "no STUN response"})
        return
    mtype, length = struct.unpack("!HH", data[:4])
    doc = {"ok": mtype == 0x0101}
    pos = 20
    while pos + 4 <= 20 + length and pos + 4 <= len(data):
        atype, alen = struct.unpack("!HH", data[pos:pos + 4])
        value = data[pos + 4:pos + 4 + alen]
        if atype == 0x0020:
            doc["mapped"] = stun_addr(value, txid, True)
        elif atype == 0x0001 and "mapped" not in doc:
            doc["mapped"] = stun_addr(value, txid, False)
        elif atype == 0x802C:
            doc["other"] = stun_addr(value, txid, False)
        elif atype == 0x802B:
            doc["origin"] = stun_addr(value, txid, False)
        pos += 4 + alen + (-alen % 4)
    out(doc)


# ---------------------------------------------------------------- NAT-PMP (RFC 6886)
def client_natpmp(gw, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    dest = (lab_only(gw), 5351)
    doc = {}
    try:
        s.sendto(b"\x00\x00", dest)
        data = s.recv(64)
        doc["external_ip"] = socket.inet_ntoa(data[8:12])
        s.sendto(struct.pack("!BBHHHI", 0, 1, 0, int(port), int(port), 120), dest)
        data = s.recv(64)
        _, op, code, _, internal, external, life = struct.unpack("!BBHIHHI", data[:16])
        doc.update({"result": code, "internal_port": internal, "external_port": external,
                    "lifetime": life})
    except (OSError, struct.error) as e:
        doc["error"] = str(e)
    out(doc)


def client_expect(port, ip, eport, a, b):
    sock = socket.socket(family(ip), socket.SOCK_DGRAM)
    sock.bind(("", int(port)))
    ctl = socket.socket(family(a), socket.SOCK_DGRAM)
    msg = "FROM %s %s 4000 TO %s %d" % (nonce(), lab_only(b), lab_only(ip), int(eport))
    got = None
    for _ in range(3):
        ctl.sendto(msg.encode(), (lab_only(a), 4000))
        r, _, _ = select.select([sock], [], [], 0.7)
        if r:
            got = sock.recvfrom(2048)[1]
            break
    out({"received": got is not None, "from": got and "%s:%d" % (bracket(got[0]), got[1])})


def main(argv):
    cmds = {
        "serve": lambda *ips: serve(ips),
        "map": client_map,
        "filter": client_filter,
        "tcp": client_tcp,
        "rate": client_rate,
        "stun": client_stun,
        "natpmp": client_natpmp,
        "expect": client_expect,
    }
    if len(argv) < 2 or argv[1] not in cmds:
        raise SystemExit(__doc__)
    cmds[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
