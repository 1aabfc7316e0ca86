//! The unsafe calls of weft-crypto: libsodium's detached secretbox and its HSalsa20 core, each
//! wrapped in a safe function over fixed-size arrays and slices, so the rest of the crate is
//! safe code.
#![allow(unsafe_code)]

use std::sync::Once;

use libsodium_sys as ffi;

static INIT: Once = Once::new();

/// Runs `sodium_init` once per process. It picks the CPU-specific implementations (the
/// vectorised Salsa20 among them); without it libsodium still computes the same bytes with its
/// portable code, so a failed init (which only concerns its RNG) is not an error for us.
fn init() {
    INIT.call_once(|| {
        // SAFETY: sodium_init takes no arguments, is thread-safe and may be called repeatedly.
        let _ = unsafe { ffi::sodium_init() };
    });
}

/// Encrypts `msg` in place and returns its Poly1305 tag.
pub(crate) fn secretbox_seal_detached(
    msg: &mut [u8],
    nonce: &[u8; 24],
    key: &[u8; 32],
) -> [u8; 16] {
    init();
    let mut tag = [0u8; 16];
    let p = msg.as_mut_ptr();
    // SAFETY: `p` points to `msg.len()` writable bytes; libsodium allows the ciphertext and
    // message buffers to be the same; `tag`, `nonce` and `key` have the sizes libsodium reads or
    // writes (crypto_secretbox_MACBYTES, NONCEBYTES, KEYBYTES). The length fits u64 on every
    // target Rust supports. The call fails only for a message over
    // crypto_secretbox_MESSAGEBYTES_MAX (2^64 - 17), which no slice reaches.
    let rc = unsafe {
        ffi::crypto_secretbox_detached(
            p,
            tag.as_mut_ptr(),
            p,
            msg.len() as u64,
            nonce.as_ptr(),
            key.as_ptr(),
        )
    };
    debug_assert_eq!(rc, 0);
    tag
}

/// Verifies `tag` over the ciphertext `msg` and, only if it is genuine, decrypts `msg` in place.
/// Returns whether it was genuine; when not, `msg` is left unchanged.
pub(crate) fn secretbox_open_detached(
    msg: &mut [u8],
    tag: &[u8; 16],
    nonce: &[u8; 24],
    key: &[u8; 32],
) -> bool {
    init();
    let p = msg.as_mut_ptr();
    // SAFETY: as in `secretbox_seal_detached`; libsodium checks the tag before writing anything,
    // so on failure `msg` is untouched.
    let rc = unsafe {
        ffi::crypto_secretbox_open_detached(
            p,
            p,
            tag.as_ptr(),
            msg.len() as u64,
            nonce.as_ptr(),
            key.as_ptr(),
        )
    };
    rc == 0
}

/// HSalsa20 of `input` under `key` with the standard constants ("expand 32-byte k").
pub(crate) fn hsalsa20(input: &[u8; 16], key: &[u8; 32]) -> [u8; 32] {
    init();
    let mut out = [0u8; 32];
    // SAFETY: the buffers have the sizes crypto_core_hsalsa20 reads and writes (OUTPUTBYTES 32,
    // INPUTBYTES 16, KEYBYTES 32); a null constant pointer selects the standard constants.
    let rc = unsafe {
        ffi::crypto_core_hsalsa20(
            out.as_mut_ptr(),
            input.as_ptr(),
            key.as_ptr(),
            std::ptr::null(),
        )
    };
    debug_assert_eq!(rc, 0);
    out
}
