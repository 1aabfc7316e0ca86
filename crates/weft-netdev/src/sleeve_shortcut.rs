//! The sleeve receive shortcut: a tc program at the ingress of the interfaces sleeve traffic
//! arrives on, which takes the plain case of a sleeve datagram — one frame, unicast, for a
//! container behind our bridge, from a peer we hold a connection with, with a source MAC the
//! data path has already bound to the frame's source peer — strips the outer headers in the
//! kernel and hands the frame to the TAP's ingress, as if the data path had written it.
//!
//! Why: a frame through the userspace data path costs a thread wake-up on each host, and those
//! wake-ups are most of a sleeve round trip's extra time over kernel VXLAN. The kernel skips
//! one of them per direction; everything else — relaying, broadcasts, MAC learning, control
//! frames, several frames per datagram, GRO batches, anything unexpected — still goes up to
//! the socket untouched, so the data path stays the one authority.
//!
//! What it takes is exactly what the data path would inject and do nothing else with: one
//! record, for us, captured by another peer, to a MAC bound to our bridge (a frame to any other
//! MAC is flooded on by the data path), from a MAC the data path bound to the record's source
//! peer — and the data path copies only bindings of known peers that are not direct fastdp
//! neighbours (whose frames VXLAN delivers), never the zero MAC of control frames.
//!
//! Order: a frame must not overtake the ones already queued on the socket (a TCP receiver
//! would count them lost). The program writes the time of each datagram it leaves up (and of
//! every IPv4 UDP fragment, which may belong to one); the data path writes the time it last
//! found the socket empty (read just before that read, less [`DRAIN_MARGIN_NS`]); the program
//! takes frames only while the last one it left up is older than that.
//!
//! Firewall: the program runs before netfilter's input hook. A rule added against a peer after
//! its connection is up does not stop the frames the program takes until the heartbeats, which
//! still go up and are dropped, time the connection out and the data path removes its entry.
//!
//! Checks the kernel would have made and the program skips: the IP header checksum and the UDP
//! checksum of the outer packet (the frame inside carries its own; the link layer's CRC covers
//! the wire), as for kernel VXLAN.
//!
//! Maps: `conns` (outer source address, destination address and source port → the peer
//! holding that connection), `macs` (MAC → the peer it lives behind, and when the program last
//! saw it, so that the data path can keep its own table fresh), `state` (one memory-mapped
//! value of counters and the two times above).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError};

use crate::bpf::{Alu, Asm, Jmp, Program, Size, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use crate::sys::{BpfMap, SharedWords};
use crate::NetdevError;

const MAP_TYPE_HASH: u32 = 1;
const MAP_TYPE_ARRAY: u32 = 2;
const F_MMAPABLE: u32 = 1 << 10;

/// How long a datagram the program leaves up may take to reach the socket.
pub const DRAIN_MARGIN_NS: u64 = 200_000;

/// Most connections and MACs the maps hold; past that, frames take the data path.
const MAX_CONNS: u32 = 4096;
const MAX_MACS: u32 = 65536;

/// Words of the `state` value.
const W_DRAINED: usize = 0;
const W_LAST_UP: usize = 1;
const W_FRAMES: usize = 2;
const W_BYTES: usize = 3;
const W_PASSED: usize = 4;
const STATE_WORDS: usize = 5;

// Helpers (`enum bpf_func_id`).
const KTIME_GET_NS: i32 = 5;
const SKB_STORE_BYTES: i32 = 9;
const SKB_LOAD_BYTES: i32 = 26;
const REDIRECT: i32 = 23;
const SKB_PULL_DATA: i32 = 39;
const SKB_ADJUST_ROOM: i32 = 50;
const ADJ_ROOM_MAC: i32 = 1;
const F_INGRESS: i32 = 1;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

// `struct __sk_buff` fields.
const SKB_LEN: i16 = 0;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
const SKB_GSO_SEGS: i16 = 164;

/// Outer Ethernet + IPv4 (no options) + UDP + sender name + record header: what is stripped,
/// but for the outer Ethernet header, whose place the frame's own header takes.
const OUTER: i32 = 14 + 20 + 8 + 6 + 14;
/// Bytes the program reads: the outer headers and the frame's Ethernet header.
const HEADERS: i32 = OUTER + 14;
/// Smallest frame taken: the kernel keeps at least an IPv4 header's worth after the strip.
const MIN_FRAME: i32 = 14 + 20;

/// A 16-bit network-order field as the program's little-endian load sees it.
fn net16(v: u16) -> i32 {
    i32::from(u16::from_le_bytes(v.to_be_bytes()))
}

/// The program's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShortcutCounters {
    /// Frames handed to the TAP by the kernel.
    pub frames: u64,
    /// Their bytes (Ethernet frames).
    pub bytes: u64,
    /// Sleeve datagrams (and IPv4 UDP fragments) left to the stack.
    pub passed: u64,
}

/// A MAC binding as the program holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortcutMac {
    /// The MAC.
    pub mac: [u8; 6],
    /// The peer it lives behind (wire bytes).
    pub peer: [u8; 6],
    /// When the program last took a frame from it (`CLOCK_MONOTONIC` ns, 0 for never).
    pub seen: u64,
}

/// The loaded program, its maps, and where it is attached.
#[derive(Debug)]
pub struct SleeveShortcut {
    prog: Program,
    conns: BpfMap,
    macs: BpfMap,
    /// Kept open for the program's lifetime (the mapping is `shared`).
    _state: BpfMap,
    shared: SharedWords,
    links: Mutex<HashMap<u32, OwnedFd>>,
}

impl SleeveShortcut {
    /// Loads the program for peer `us` (its 6 wire bytes), the sleeve UDP `port`, and the
    /// TAP (`tap_ifindex`) whose ingress gets the frames. Attaches nowhere yet.
    pub fn load(us: [u8; 6], port: u16, tap_ifindex: u32) -> Result<Self, NetdevError> {
        let mk = |t, k, v, n, f, name: &str| {
            BpfMap::create(t, k, v, n, f, name)
                .map_err(|e| NetdevError::os(format!("creating BPF map {name}"), e))
        };
        let conns = mk(MAP_TYPE_HASH, 16, 8, MAX_CONNS, 0, "weft_conns")?;
        let macs = mk(MAP_TYPE_HASH, 8, 16, MAX_MACS, 0, "weft_macs")?;
        let state = mk(
            MAP_TYPE_ARRAY,
            4,
            (STATE_WORDS * 8) as u32,
            1,
            F_MMAPABLE,
            "weft_state",
        )?;
        let shared = state
            .mmap()
            .map_err(|e| NetdevError::os("mapping BPF map weft_state", e))?;
        let tap = i32::try_from(tap_ifindex).map_err(|_| NetdevError::Invalid {
            op: "loading the sleeve shortcut".into(),
            reason: format!("interface index {tap_ifindex} out of range"),
        })?;
        let insns = program(us, port, tap, &conns, &macs, &state).map_err(|reason| {
            NetdevError::Invalid {
                op: "assembling the sleeve shortcut".into(),
                reason,
            }
        })?;
        let prog = Program::load_tc(&insns, "weft_sleeve_rx")?;
        Ok(Self {
            prog,
            conns,
            macs,
            _state: state,
            shared,
            links: Mutex::default(),
        })
    }

    /// Attaches at interface `ifindex`'s ingress, unless already there; true if newly.
    pub fn attach(&self, ifindex: u32) -> Result<bool, NetdevError> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if links.contains_key(&ifindex) {
            return Ok(false);
        }
        let link = self.prog.attach_ingress(ifindex)?;
        links.insert(ifindex, link);
        Ok(true)
    }

    fn conn_key(from: SocketAddrV4, local: Ipv4Addr) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&from.ip().octets());
        k[4..8].copy_from_slice(&local.octets());
        k[8..10].copy_from_slice(&from.port().to_be_bytes());
        k
    }

    /// Datagrams from `from` to our address `local` come from `peer` (its wire bytes).
    pub fn set_conn(
        &self,
        from: SocketAddrV4,
        local: Ipv4Addr,
        peer: [u8; 6],
    ) -> Result<(), NetdevError> {
        let mut v = [0u8; 8];
        v[..6].copy_from_slice(&peer);
        self.conns
            .update(&Self::conn_key(from, local), &v)
            .map_err(|e| NetdevError::os(format!("adding sleeve connection {from}"), e))
    }

    /// Forgets what [`SleeveShortcut::set_conn`] said about `from` → `local`.
    pub fn remove_conn(&self, from: SocketAddrV4, local: Ipv4Addr) -> Result<(), NetdevError> {
        self.conns
            .delete(&Self::conn_key(from, local))
            .map_err(|e| NetdevError::os(format!("removing sleeve connection {from}"), e))
    }

    fn mac_key(mac: [u8; 6]) -> [u8; 8] {
        let mut k = [0u8; 8];
        k[..6].copy_from_slice(&mac);
        k
    }

    /// `mac` lives behind `peer`.
    pub fn set_mac(&self, mac: [u8; 6], peer: [u8; 6]) -> Result<(), NetdevError> {
        let mut v = [0u8; 16];
        v[..6].copy_from_slice(&peer);
        self.macs
            .update(&Self::mac_key(mac), &v)
            .map_err(|e| NetdevError::os("adding a MAC to the sleeve shortcut", e))
    }

    /// Forgets `mac`.
    pub fn remove_mac(&self, mac: [u8; 6]) -> Result<(), NetdevError> {
        self.macs
            .delete(&Self::mac_key(mac))
            .map_err(|e| NetdevError::os("removing a MAC from the sleeve shortcut", e))
    }

    /// Every MAC binding the program knows.
    pub fn macs(&self) -> Result<Vec<ShortcutMac>, NetdevError> {
        let err = |e| NetdevError::os("reading the sleeve shortcut's MACs", e);
        let mut out = Vec::new();
        let mut key = [0u8; 8];
        let mut prev: Option<[u8; 8]> = None;
        while self
            .macs
            .next_key(prev.as_ref().map(|k| &k[..]), &mut key)
            .map_err(err)?
        {
            let mut v = [0u8; 16];
            if self.macs.lookup(&key, &mut v).map_err(err)? {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&key[..6]);
                let mut peer = [0u8; 6];
                peer.copy_from_slice(&v[..6]);
                let seen = u64::from_le_bytes(v[8..].try_into().unwrap_or_default());
                out.push(ShortcutMac { mac, peer, seen });
            }
            prev = Some(key);
            if out.len() > MAX_MACS as usize {
                break;
            }
        }
        Ok(out)
    }

    /// The data path found the socket empty at `at` ([`monotonic_ns`], read before that read),
    /// after writing out everything read before it. Counts as drained only what the program
    /// left up [`DRAIN_MARGIN_NS`] before: a datagram takes a moment from the program to the
    /// socket, and the kernel may run the program on a whole batch first.
    pub fn drained(&self, at: u64) {
        self.shared
            .store(W_DRAINED, at.saturating_sub(DRAIN_MARGIN_NS));
    }

    /// Whether the program holds frames back (it left a datagram up after the last drain):
    /// the data path should then read the socket again soon, even with nothing to read, so
    /// that the program takes frames again.
    pub fn holding_back(&self) -> bool {
        self.shared.load(W_LAST_UP) > self.shared.load(W_DRAINED)
    }

    /// The program's counters so far.
    pub fn counters(&self) -> ShortcutCounters {
        ShortcutCounters {
            frames: self.shared.load(W_FRAMES),
            bytes: self.shared.load(W_BYTES),
            passed: self.shared.load(W_PASSED),
        }
    }

    /// Runs the program on `packet` without sending anything (for tests): its verdict
    /// (0 left to the stack, 2 dropped, 7 redirected) and the packet as it left.
    pub fn test_run(&self, packet: &[u8]) -> Result<(u32, Vec<u8>), NetdevError> {
        self.prog.test_run(packet)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, the program's clock.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64).wrapping_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The program. Packet offsets: outer Ethernet 0, IPv4 14 (protocol 23, addresses 26 and 30),
/// UDP 34 (ports 34 and 36, length 38), sender name 42, record source 48, destination 54,
/// length 60, frame 62 (destination MAC 62, source MAC 68).
///
/// Stack: conns key at -16, source MAC key -24, destination MAC key -32, state key -36, the
/// frame's Ethernet header -56..-42, the destination port -64.
fn program(
    us: [u8; 6],
    port: u16,
    tap: i32,
    conns: &BpfMap,
    macs: &BpfMap,
    state: &BpfMap,
) -> Result<Vec<[u8; 8]>, String> {
    // A peer name as the program holds it: six bytes loaded little-endian, shifted to the top.
    let mut name = [0u8; 8];
    name[..6].copy_from_slice(&us);
    let us_shifted = u64::from_le_bytes(name) << 16;
    // R7 = the packet's start; to `short` unless `n` bytes follow it in the linear part.
    let in_reach = |a: &mut Asm, n: i32, short: &'static str| {
        a.ldx(Size::W, R7, R6, SKB_DATA)
            .ldx(Size::W, R3, R6, SKB_DATA_END)
            .alu_reg(Alu::Mov, R4, R7)
            .alu(Alu::Add, R4, n)
            .jmp_reg(Jmp::Gt, R4, R3, short);
    };
    // R4 = the peer name (6 bytes) at R5 + off, shifted to the top.
    let name_at = |a: &mut Asm, reg: u8, src: u8, off: i16| {
        a.ldx(Size::Dw, reg, src, off).alu(Alu::Lsh, reg, 16);
    };
    // The MAC at packet offset `off` as a `macs` key at `key_at`, looked up: R0 = value or 0.
    let mac_lookup = |a: &mut Asm, off: i16, key_at: i16| {
        a.ldx(Size::Dw, R5, R7, off)
            .alu(Alu::Lsh, R5, 16)
            .alu(Alu::Rsh, R5, 16)
            .stx(Size::Dw, R10, key_at, R5)
            .map_lookup(macs.fd(), i32::from(key_at));
    };
    let mut a = Asm::default();
    a.alu_reg(Alu::Mov, R6, R1);
    // IPv4 UDP, or not ours at all.
    in_reach(&mut a, 34, "pass");
    a.ldx(Size::H, R4, R7, 12)
        .jmp(Jmp::Ne, R4, net16(0x0800), "pass")
        .ldx(Size::B, R4, R7, 23)
        .jmp(Jmp::Ne, R4, 17, "pass")
        // A fragment (maybe of a sleeve datagram: only the first names the port) or options
        // (the port is elsewhere): up, so that the guard below counts it.
        .ldx(Size::H, R4, R7, 20)
        .alu(Alu::And, R4, net16(0x3fff))
        .jmp(Jmp::Ne, R4, 0, "up")
        .ldx(Size::B, R4, R7, 14)
        .jmp(Jmp::Ne, R4, 0x45, "up")
        // To the sleeve port, read even from a paged packet.
        .alu_reg(Alu::Mov, R1, R6)
        .alu(Alu::Mov, R2, 36)
        .alu_reg(Alu::Mov, R3, R10)
        .alu(Alu::Add, R3, -64)
        .alu(Alu::Mov, R4, 2)
        .call(SKB_LOAD_BYTES)
        .jmp(Jmp::Ne, R0, 0, "pass")
        .ldx(Size::H, R4, R10, -64)
        .jmp(Jmp::Ne, R4, net16(port), "pass")
        // Sleeve traffic: from here on, what the program does not take goes "up".
        // Not a GRO batch; the headers in the linear part, pulled in if needed.
        .ldx(Size::W, R4, R6, SKB_GSO_SEGS)
        .jmp(Jmp::Gt, R4, 1, "up");
    in_reach(&mut a, HEADERS, "pull");
    a.ja("parse")
        .label("pull")
        .ldx(Size::W, R4, R6, SKB_LEN)
        .jmp(Jmp::Lt, R4, HEADERS, "up")
        .alu_reg(Alu::Mov, R1, R6)
        .alu(Alu::Mov, R2, HEADERS)
        .call(SKB_PULL_DATA)
        .jmp(Jmp::Ne, R0, 0, "up");
    in_reach(&mut a, HEADERS, "up");
    a.label("parse")
        // Exactly one record (R8 = its frame's length), and lengths that agree.
        .ldx(Size::H, R8, R7, 60)
        .be16(R8)
        .jmp(Jmp::Lt, R8, MIN_FRAME, "up")
        .ldx(Size::H, R4, R7, 16)
        .be16(R4)
        .alu_reg(Alu::Mov, R5, R8)
        .alu(Alu::Add, R5, OUTER - 14)
        .jmp_reg(Jmp::Ne, R4, R5, "up")
        .ldx(Size::H, R4, R7, 38)
        .be16(R4)
        .alu_reg(Alu::Mov, R5, R8)
        .alu(Alu::Add, R5, OUTER - 34)
        .jmp_reg(Jmp::Ne, R4, R5, "up")
        .ldx(Size::W, R4, R6, SKB_LEN)
        .alu_reg(Alu::Mov, R5, R8)
        .alu(Alu::Add, R5, OUTER)
        .jmp_reg(Jmp::Ne, R4, R5, "up")
        // A connection we hold, and the datagram's sender is its peer.
        .ldx(Size::Dw, R4, R7, 26)
        .stx(Size::Dw, R10, -16, R4)
        .ldx(Size::H, R4, R7, 34)
        .stx(Size::Dw, R10, -8, R4)
        .map_lookup(conns.fd(), -16)
        .jmp(Jmp::Eq, R0, 0, "up");
    name_at(&mut a, R4, R0, 0);
    name_at(&mut a, R5, R7, 42);
    a.jmp_reg(Jmp::Ne, R5, R4, "up");
    // For us, captured by someone else.
    name_at(&mut a, R5, R7, 54);
    a.ld_imm64(R4, us_shifted).jmp_reg(Jmp::Ne, R5, R4, "up");
    name_at(&mut a, R5, R7, 48);
    a.jmp_reg(Jmp::Eq, R5, R4, "up");
    // To a MAC behind our bridge (others are flooded on by the data path; group MACs and the
    // zero MAC of control frames are never in the map).
    mac_lookup(&mut a, 62, -32);
    a.jmp(Jmp::Eq, R0, 0, "up");
    name_at(&mut a, R4, R0, 0);
    a.ld_imm64(R5, us_shifted).jmp_reg(Jmp::Ne, R4, R5, "up");
    // From a MAC bound to the record's source peer (else the data path learns it).
    mac_lookup(&mut a, 68, -24);
    a.jmp(Jmp::Eq, R0, 0, "up").alu_reg(Alu::Mov, R9, R0);
    name_at(&mut a, R4, R9, 0);
    name_at(&mut a, R5, R7, 48);
    a.jmp_reg(Jmp::Ne, R5, R4, "up")
        // The MAC was seen now (which the data path's table learns from).
        .call(KTIME_GET_NS)
        .stx(Size::Dw, R9, 8, R0)
        // Nothing left on the socket that this frame would overtake.
        .st(Size::W, R10, -36, 0)
        .map_lookup(state.fd(), -36)
        .jmp(Jmp::Eq, R0, 0, "up")
        .ldx(Size::Dw, R4, R0, (W_LAST_UP * 8) as i16)
        .ldx(Size::Dw, R5, R0, (W_DRAINED * 8) as i16)
        .jmp_reg(Jmp::Gt, R4, R5, "up")
        .alu_reg(Alu::Mov, R9, R0)
        // Taken. The frame's Ethernet header to the stack, then the outer headers and it
        // cut out...
        .ldx(Size::Dw, R4, R7, OUTER as i16)
        .stx(Size::Dw, R10, -56, R4)
        .ldx(Size::W, R4, R7, OUTER as i16 + 8)
        .stx(Size::W, R10, -48, R4)
        .ldx(Size::H, R4, R7, OUTER as i16 + 12)
        .stx(Size::H, R10, -44, R4)
        .alu_reg(Alu::Mov, R1, R6)
        .alu(Alu::Mov, R2, -OUTER)
        .alu(Alu::Mov, R3, ADJ_ROOM_MAC)
        .alu(Alu::Mov, R4, 0)
        .call(SKB_ADJUST_ROOM)
        .jmp(Jmp::Ne, R0, 0, "up")
        // ... and written over the outer Ethernet header.
        .alu_reg(Alu::Mov, R1, R6)
        .alu(Alu::Mov, R2, 0)
        .alu_reg(Alu::Mov, R3, R10)
        .alu(Alu::Add, R3, -56)
        .alu(Alu::Mov, R4, 14)
        .alu(Alu::Mov, R5, 0)
        .call(SKB_STORE_BYTES)
        .jmp(Jmp::Ne, R0, 0, "shot")
        .alu(Alu::Mov, R4, 1)
        .atomic_add(R9, (W_FRAMES * 8) as i16, R4)
        .atomic_add(R9, (W_BYTES * 8) as i16, R8)
        // Into the bridge through the TAP's ingress.
        .alu(Alu::Mov, R1, tap)
        .alu(Alu::Mov, R2, F_INGRESS)
        .call(REDIRECT)
        .exit()
        // Left to the socket: note when.
        .label("up")
        .call(KTIME_GET_NS)
        .alu_reg(Alu::Mov, R7, R0)
        .st(Size::W, R10, -36, 0)
        .map_lookup(state.fd(), -36)
        .jmp(Jmp::Eq, R0, 0, "pass")
        .stx(Size::Dw, R0, (W_LAST_UP * 8) as i16, R7)
        .alu(Alu::Mov, R4, 1)
        .atomic_add(R0, (W_PASSED * 8) as i16, R4)
        .label("pass")
        .alu(Alu::Mov, R0, TC_ACT_OK)
        .exit()
        .label("shot")
        .alu(Alu::Mov, R0, TC_ACT_SHOT)
        .exit();
    a.assemble()
}
