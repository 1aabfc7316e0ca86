//! A BPF assembler just large enough for weft's one program (the sleeve receive shortcut),
//! with labels for jumps, and the loaded program and its tcx attachment as owned values.
//!
//! Written by hand because the crates that load BPF (aya, libbpf-rs) take ELF objects built by
//! clang or bpf-linker, a toolchain the build machine does not have; a program of some sixty
//! instructions is clearer written out here, each step commented, than shipped as a binary.
//! The kernel's verifier checks every program at load time: a mistake here is a load error
//! (with the verifier's log), never a kernel fault.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use crate::sys;
use crate::NetdevError;

/// Registers: `R0` return value, `R1`–`R5` arguments (clobbered by calls), `R6`–`R9` kept
/// across calls, `R10` the read-only frame pointer.
pub(crate) const R0: u8 = 0;
pub(crate) const R1: u8 = 1;
pub(crate) const R2: u8 = 2;
pub(crate) const R3: u8 = 3;
pub(crate) const R4: u8 = 4;
pub(crate) const R5: u8 = 5;
pub(crate) const R6: u8 = 6;
pub(crate) const R7: u8 = 7;
pub(crate) const R8: u8 = 8;
pub(crate) const R9: u8 = 9;
pub(crate) const R10: u8 = 10;

/// Access sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Size {
    B = 0x10,
    H = 0x08,
    W = 0x00,
    Dw = 0x18,
}

/// 64-bit ALU operations.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Alu {
    Add = 0x00,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Mov = 0xb0,
}

/// Conditional jumps (unsigned comparisons).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Jmp {
    Eq = 0x10,
    Gt = 0x20,
    Ne = 0x50,
    Lt = 0xa0,
}

const LDX_MEM: u8 = 0x61; // BPF_LDX | BPF_MEM, size added
const STX_MEM: u8 = 0x63;
const ST_MEM: u8 = 0x62;
const STX_ATOMIC_DW: u8 = 0xdb; // BPF_STX | BPF_ATOMIC | BPF_DW; imm BPF_ADD = 0
const ALU64_K: u8 = 0x07;
const ALU64_X: u8 = 0x0f;
const END_TO_BE: u8 = 0xdc; // BPF_ALU | BPF_END | BPF_TO_BE
const JMP_K: u8 = 0x05;
const JMP_X: u8 = 0x0d;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;
/// `BPF_FUNC_map_lookup_elem`.
const MAP_LOOKUP_ELEM: i32 = 1;

#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

#[derive(Debug)]
enum Item {
    Insn(Insn),
    /// A jump whose offset is the distance to a label.
    Jump(Insn, &'static str),
    Label(&'static str),
}

/// A program under construction.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    items: Vec<Item>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.items.push(Item::Insn(Insn {
            code,
            dst,
            src,
            off,
            imm,
        }));
        self
    }

    /// `dst op= imm` (64-bit).
    pub(crate) fn alu(&mut self, op: Alu, dst: u8, imm: i32) -> &mut Self {
        self.op(ALU64_K | op as u8, dst, 0, 0, imm)
    }

    /// `dst op= src` (64-bit).
    pub(crate) fn alu_reg(&mut self, op: Alu, dst: u8, src: u8) -> &mut Self {
        self.op(ALU64_X | op as u8, dst, src, 0, 0)
    }

    /// `dst = dst` read as a big-endian 16-bit value (the low 16 bits, byte-swapped).
    pub(crate) fn be16(&mut self, dst: u8) -> &mut Self {
        self.op(END_TO_BE, dst, 0, 0, 16)
    }

    /// `dst = *(size *)(src + off)`.
    pub(crate) fn ldx(&mut self, size: Size, dst: u8, src: u8, off: i16) -> &mut Self {
        self.op(LDX_MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub(crate) fn stx(&mut self, size: Size, dst: u8, off: i16, src: u8) -> &mut Self {
        self.op(STX_MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub(crate) fn st(&mut self, size: Size, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.op(ST_MEM | size as u8, dst, 0, off, imm)
    }

    /// `*(u64 *)(dst + off) += src`, atomically.
    pub(crate) fn atomic_add(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.op(STX_ATOMIC_DW, dst, src, off, 0)
    }

    /// `dst = imm` (64-bit, two instruction slots).
    pub(crate) fn ld_imm64(&mut self, dst: u8, imm: u64) -> &mut Self {
        self.op(LD_IMM64, dst, 0, 0, imm as u32 as i32)
            .op(0, 0, 0, 0, (imm >> 32) as u32 as i32)
    }

    /// `dst = map` (the verifier turns the descriptor into the map's address).
    pub(crate) fn ld_map(&mut self, dst: u8, map: BorrowedFd<'_>) -> &mut Self {
        use std::os::fd::AsRawFd;
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, map.as_raw_fd())
            .op(0, 0, 0, 0, 0)
    }

    /// `if dst op imm goto label`.
    pub(crate) fn jmp(&mut self, op: Jmp, dst: u8, imm: i32, label: &'static str) -> &mut Self {
        let i = Insn {
            code: JMP_K | op as u8,
            dst,
            src: 0,
            off: 0,
            imm,
        };
        self.items.push(Item::Jump(i, label));
        self
    }

    /// `if dst op src goto label`.
    pub(crate) fn jmp_reg(&mut self, op: Jmp, dst: u8, src: u8, label: &'static str) -> &mut Self {
        let i = Insn {
            code: JMP_X | op as u8,
            dst,
            src,
            off: 0,
            imm: 0,
        };
        self.items.push(Item::Jump(i, label));
        self
    }

    /// `goto label`.
    pub(crate) fn ja(&mut self, label: &'static str) -> &mut Self {
        let i = Insn {
            code: JMP_K,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        };
        self.items.push(Item::Jump(i, label));
        self
    }

    /// `R0 = bpf_map_lookup_elem(map, R10 + key_at)`: the value's address, or 0.
    pub(crate) fn map_lookup(&mut self, map: BorrowedFd<'_>, key_at: i32) -> &mut Self {
        self.ld_map(R1, map)
            .alu_reg(Alu::Mov, R2, R10)
            .alu(Alu::Add, R2, key_at)
            .call(MAP_LOOKUP_ELEM)
    }

    /// Calls helper number `helper` (arguments in `R1`–`R5`, result in `R0`).
    pub(crate) fn call(&mut self, helper: i32) -> &mut Self {
        self.op(CALL, 0, 0, 0, helper)
    }

    /// Returns `R0`.
    pub(crate) fn exit(&mut self) -> &mut Self {
        self.op(EXIT, 0, 0, 0, 0)
    }

    /// Marks where `name`'s jumps land.
    pub(crate) fn label(&mut self, name: &'static str) -> &mut Self {
        self.items.push(Item::Label(name));
        self
    }

    /// The instructions, jumps resolved; fails on an unknown or duplicate label.
    pub(crate) fn assemble(&self) -> Result<Vec<[u8; 8]>, String> {
        let mut at = HashMap::new();
        let mut n = 0usize;
        for item in &self.items {
            match item {
                Item::Label(l) => {
                    if at.insert(*l, n).is_some() {
                        return Err(format!("label {l} defined twice"));
                    }
                }
                Item::Insn(_) | Item::Jump(..) => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for item in &self.items {
            match item {
                Item::Label(_) => {}
                Item::Insn(i) => out.push(i.bytes()),
                Item::Jump(i, l) => {
                    let to = *at.get(l).ok_or_else(|| format!("no label {l}"))?;
                    let off = i16::try_from(to as i64 - out.len() as i64 - 1)
                        .map_err(|_| format!("jump to {l} too far"))?;
                    out.push(Insn { off, ..*i }.bytes());
                }
            }
        }
        Ok(out)
    }
}

/// `BPF_PROG_TYPE_SCHED_CLS`: a tc program.
const PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_TCX_INGRESS`.
const TCX_INGRESS: u32 = 46;

/// A loaded tc program.
#[derive(Debug)]
pub(crate) struct Program(OwnedFd);

impl Program {
    /// Loads `insns` as a tc program; a verifier rejection carries the end of its log.
    pub(crate) fn load_tc(insns: &[[u8; 8]], name: &str) -> Result<Self, NetdevError> {
        let op = format!("loading BPF program {name}");
        let mut log = vec![0u8; 64 * 1024];
        match sys::bpf_prog_load(PROG_TYPE_SCHED_CLS, insns, c"Apache-2.0", name, &mut log) {
            Ok(fd) => Ok(Self(fd)),
            Err(errno) if errno == Errno::EACCES || errno == Errno::EINVAL => {
                let text = String::from_utf8_lossy(&log);
                let text = text.trim_end_matches('\0').trim();
                let tail: String = text.lines().rev().take(6).collect::<Vec<_>>().join(" | ");
                Err(NetdevError::Invalid {
                    op,
                    reason: format!("{}: verifier says: {tail}", errno.desc()),
                })
            }
            Err(errno) => Err(NetdevError::os(op, errno)),
        }
    }

    /// Attaches the program at interface `ifindex`'s ingress (tcx); detached when the returned
    /// link is dropped, or when the process ends.
    pub(crate) fn attach_ingress(&self, ifindex: u32) -> Result<OwnedFd, NetdevError> {
        sys::bpf_link_create(self.0.as_fd(), ifindex, TCX_INGRESS).map_err(|e| {
            NetdevError::os(format!("attaching BPF program to interface {ifindex}"), e)
        })
    }

    /// Runs the program once on `packet` (a test run: nothing is sent): its verdict and the
    /// packet as the program left it.
    pub(crate) fn test_run(&self, packet: &[u8]) -> Result<(u32, Vec<u8>), NetdevError> {
        let mut out = vec![0u8; packet.len() + 256];
        let (verdict, len) = sys::bpf_prog_test_run(self.0.as_fd(), packet, &mut out, None)
            .map_err(|e| NetdevError::os("test-running a BPF program", e))?;
        out.truncate(len);
        Ok((verdict, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_count_from_the_next_instruction_and_ld_imm64_takes_two_slots() {
        let mut a = Asm::default();
        a.jmp(Jmp::Eq, R1, 7, "end")
            .ld_imm64(R2, 0x1122_3344_5566_7788)
            .label("end")
            .exit();
        let p = a.assemble().expect("labels resolve");
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], [0x15, 0x01, 2, 0, 7, 0, 0, 0]);
        assert_eq!(p[1], [0x18, 0x02, 0, 0, 0x88, 0x77, 0x66, 0x55]);
        assert_eq!(p[2], [0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(p[3], [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn encodes_registers_offsets_and_negative_immediates() {
        let mut a = Asm::default();
        a.ldx(Size::W, R2, R6, 76)
            .stx(Size::Dw, R10, -16, R4)
            .alu(Alu::Mov, R2, -62)
            .be16(R8);
        let p = a.assemble().expect("no labels");
        assert_eq!(p[0], [0x61, 0x62, 76, 0, 0, 0, 0, 0]);
        assert_eq!(p[1], [0x7b, 0x4a, 0xf0, 0xff, 0, 0, 0, 0]);
        assert_eq!(p[2], [0xb7, 0x02, 0, 0, 0xc2, 0xff, 0xff, 0xff]);
        assert_eq!(p[3], [0xdc, 0x08, 0, 0, 16, 0, 0, 0]);
    }

    #[test]
    fn unknown_and_duplicate_labels_are_errors() {
        let mut a = Asm::default();
        a.ja("nowhere");
        assert!(a.assemble().is_err());
        let mut b = Asm::default();
        b.label("x").label("x").exit();
        assert!(b.assemble().is_err());
    }
}
