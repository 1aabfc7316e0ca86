#!/usr/bin/env python3
"""Writes the hand-built seeds of fuzz/corpus/{handshake,handshake_encrypted,sleeve_crypto,offload,forward}/ (the other corpora
come from the repository's test vectors or, for mesh_frames, from `mesh_frames_seeds`)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def tcp4(seq, payload, flags=0x10, df=True, ident=0x1234):
    eth = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00])
    opts = bytes([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2])
    tcp_len = 20 + len(opts) + len(payload)
    src, dst = bytes([10, 2, 1, 1]), bytes([10, 2, 1, 2])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, ident,
                     0x4000 if df else 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    tcp = struct.pack("!HHIIBBHHH", 0x8000, 0x1451, seq, 7, (8 << 4), flags, 501, 0, 0)
    tcp += opts + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, tcp_len)
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    return eth + ip + tcp


def tcp6(seq, payload, flags=0x10):
    eth = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xDD])
    tcp_len = 20 + len(payload)
    src, dst = bytes(15) + b"\1", bytes(15) + b"\2"
    ip = struct.pack("!IHBB16s16s", 0x60000000, tcp_len, 6, 64, src, dst)
    tcp = struct.pack("!HHIIBBHHH", 0x8000, 0x1451, seq, 7, (5 << 4), flags, 501, 0, 0)
    tcp += payload
    pseudo = src + dst + struct.pack("!IxxxB", tcp_len, 6)
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    return eth + ip + tcp


def vnet(flags=0, gso=0, hdr_len=0, gso_size=0, start=0, off=0):
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, start, off)


def chunk(b):
    return struct.pack("<H", len(b)) + b


pat = bytes(i % 251 for i in range(700))

# offload: [u16 len][vnet hdr + frame] then [u16 len][frame]... for the coalescer.
put("offload", "tso4", chunk(vnet(1, 1, 66, 100, 34, 16) + tcp4(1000, pat[:350])))
put("offload", "tso6", chunk(vnet(1, 4, 74, 64, 54, 16) + tcp6(5, pat[:200])))
put("offload", "plain-run",
    chunk(vnet() + tcp4(1, pat[:100])) + chunk(tcp4(101, pat[100:200]))
    + chunk(tcp4(201, pat[200:250], flags=0x18)))
put("offload", "needs-csum", chunk(vnet(1, 0, 0, 0, 34, 16) + tcp4(9, pat[:30])))

# handshake: [chunk size][header][flag][features frame][a first frame].
feat = open(os.path.join(CORPUS, "features", "live-hostA"), "rb").read()
intro = b"weave\x01\x02" + b"\x00" + struct.pack(">I", len(feat)) + feat
put("handshake", "live-hostA-whole", b"\xff" + intro + b"\x00\x00\x00\x01\x00")
put("handshake", "live-hostA-7s", b"\x07" + intro)
put("handshake", "v1-only", b"\x03weave\x01\x01")

# handshake_encrypted: [chunk size][mode] then, for a genuine remote (mode bit 1 clear), the
# plaintext of its features frame; raw (bit 1 set), everything the remote sends.
put("handshake_encrypted", "genuine-dialled", b"\xff\x01" + feat)
put("handshake_encrypted", "genuine-accepted-5s", b"\x05\x00" + feat)
put("handshake_encrypted", "wrong-password", b"\xff\x05" + feat)
put("handshake_encrypted", "raw-flag0", b"\xff\x03" + intro)
put("handshake_encrypted", "raw-key-then-junk",
    b"\x09\x02weave\x01\x02\x01" + bytes(range(32)) + struct.pack(">I", 20) + bytes(20))

# sleeve_crypto: ops 0 seal [path][chunk], 1 deliver [pick], 2 flip [pick][u16 bit],
# 3 cut [pick][u16 len], 4 junk [chunk], 5 counter [path][u16][shift].
put("sleeve_crypto", "seal-deliver-replay",
    b"\x00\x00" + chunk(pat[:60]) + b"\x00\x01" + chunk(pat[:14]) + b"\x01\x00\x01\x01\x01\x00")
put("sleeve_crypto", "tamper",
    b"\x00\x00" + chunk(pat[:40]) + b"\x02\x00\x07\x00" + b"\x03\x00\x05\x00"
    + b"\x04" + chunk(pat[:30]) + b"\x01\x00")
put("sleeve_crypto", "window-edges",
    b"\x05\x00\x01\x00\x14" + b"\x00\x00" + chunk(b"")  # seq 2^20
    + b"\x05\x00\x03\x00\x00" + b"\x00\x00" + chunk(b"")  # seq 3
    + b"\x05\x00\x03\x00\x14" + b"\x00\x00" + chunk(b"")  # seq 3·2^20
    + b"\x01\x00\x01\x01\x01\x02\x01\x01")

# forward: opcodes 0 captured, 1 datagram, 2 datagram from, 3 TSO, 4 drain, 5 time,
# 6 forget, 7 max payload. Peers are 02:00:00:00:00:0N, N = 1 (us) to 5.
def peer(n):
    return bytes([2, 0, 0, 0, 0, n])


def record(src, dst, frame):
    return peer(src) + peer(dst) + struct.pack(">H", len(frame)) + frame


bcast = b"\xff" * 6 + bytes([0x0a, 0, 0, 0, 0, 1]) + b"\x08\x06" + b"arp-ish payload"
to_remote = bytes([0x0a, 0, 0, 0, 0, 2]) + bytes([0x0a, 0, 0, 0, 0, 1]) + b"\x08\x00" + pat[:60]
from_remote = bytes([0x0a, 0, 0, 0, 0, 1]) + bytes([0x0a, 0, 0, 0, 0, 2]) + b"\x08\x00" + pat[:40]
dgram = peer(2) + record(2, 1, from_remote) + record(4, 1, bcast[:6] + bytes([0x0a, 0, 0, 0, 0, 4]) + bcast[12:]) + record(2, 4, to_remote)
special = peer(2) + record(2, 1, bytes(14) + struct.pack(">Q", 0x0102030405060708))
put("forward", "capture-learn-relay",
    b"\x00" + chunk(bcast) + b"\x01" + chunk(dgram) + b"\x00" + chunk(to_remote) + b"\x04")
put("forward", "wrong-source", b"\x02\x05" + chunk(dgram) + b"\x02\x06" + chunk(special) + b"\x04")
put("forward", "tso-unicast",
    b"\x01" + chunk(dgram) + b"\x07\x01\x00\x05"
    + b"\x03" + chunk(vnet(1, 1, 66, 100, 34, 16) + tcp4(1000, pat[:350])[:0]
                      + bytes([0x0a, 0, 0, 0, 0, 2, 0x0a, 0, 0, 0, 0, 1])
                      + tcp4(1000, pat[:350])[12:])
    + b"\x04\x05\x10\x27\x06\x02\x04")

# topology_update: opcode 0 a Weave topology payload, 1 a weft-topology message, then a GC.
topo = open(os.path.join(CORPUS, "topology", "two-peers"), "rb").read()
upd = open(os.path.join(CORPUS, "topology_delta", "update"), "rb").read()
put("topology_update", "gossip-then-delta", b"\x00" + chunk(topo) + b"\x01" + chunk(upd) + b"\x02")
put("topology_update", "local-connections", b"\x03\x05\x01\x04\x05\x00" + chunk(topo) + b"\x05\x05\x02")

# mesh_frames: opcode 0 a protocol message body, 1 time passing (u16 ms), 2 a UDP datagram.
# (Bodies the routers send while connecting come from `write_mesh_frames_seeds`.)
for name in sorted(os.listdir(os.path.join(CORPUS, "protocol"))):
    body = open(os.path.join(CORPUS, "protocol", name), "rb").read()
    put("mesh_frames", "protocol-" + name, b"\x00" + chunk(body) + b"\x01\xe8\x03")
hb = open(os.path.join(CORPUS, "sleeve", "heartbeat"), "rb").read()
put("mesh_frames", "heartbeat-datagram", b"\x02" + chunk(hb))

# form_pairs: bodies as the HTTP API's clients send them (`weft connect`, `weft forget`, ...).
for name, body in [("connect", b"peer=10.0.0.1&peer=host2%3A6783&replace=true"),
                   ("escapes", b"a+b=c%20d%zz&&=x&k&%e2%82%ac=%FF"),
                   ("empty", b"")]:
    put("form_pairs", name, body)

# template: a spread of the templates Go's text/template was compared on (every 25th case of
# crates/weftd/testdata/gotemplate/expected.json), run over that directory's data.json.
import json
cases = json.load(open(os.path.join(HERE, "..", "..", "crates", "weftd", "testdata",
                                    "gotemplate", "expected.json")))
for c in cases[::25]:
    put("template", "go-" + c["name"].replace("/", "-").replace(" ", "-"), c["template"].encode())
