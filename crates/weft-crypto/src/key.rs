//! Session keys: a fresh Curve25519 key pair per connection, and the key both ends derive from
//! it and the shared password.
//!
//! Weave Net's session key is `SHA-256(crypto_box_beforenm(theirPublic, ourSecret) ||
//! password)`, where `crypto_box_beforenm` is HSalsa20 (zero input) keyed with the X25519
//! shared point, not the raw point. Like Go's `box.Precompute`, a low-order public key is not
//! refused: its shared point is all zeros, and the key still depends on the password.

use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::sys;

/// Bytes of a Curve25519 public key on the wire.
pub const PUBLIC_KEY_LEN: usize = 32;

/// A connection's 32-byte session key. It protects the control connection and, on untrusted
/// connections, the sleeve datagrams (and is the input of fastdp's IPsec keys). Debug output
/// shows nothing of it, and it is wiped when dropped.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// A key from its bytes (for a key derived elsewhere, and for tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes, for the overlays that derive their own keys from it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// One side's ephemeral Curve25519 key pair for one connection. The secret is wiped on drop
/// (clones included).
#[derive(Clone)]
pub struct EphemeralKey {
    secret: StaticSecret,
    public: [u8; PUBLIC_KEY_LEN],
}

impl EphemeralKey {
    /// A fresh key pair from `rng` (the daemon passes the OS RNG; tests a seeded one).
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret(*bytes)
    }

    /// The key pair of a given secret scalar (clamped on use, as X25519 specifies).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The public key, as sent after the encryption flag.
    pub fn public(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// The session key shared with the owner of `their_public` who knows `password`.
    pub fn session_key(&self, their_public: &[u8; PUBLIC_KEY_LEN], password: &[u8]) -> SessionKey {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*their_public));
        let precomputed = Zeroizing::new(sys::hsalsa20(&[0u8; 16], shared.as_bytes()));
        let mut h = Sha256::new();
        h.update(precomputed.as_ref());
        h.update(password);
        SessionKey(h.finalize().into())
    }
}

impl std::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn both_ends_agree_and_the_password_matters() {
        let mut rng = StdRng::seed_from_u64(1);
        let a = EphemeralKey::generate(&mut rng);
        let b = EphemeralKey::generate(&mut rng);
        assert_ne!(a.public(), b.public());
        let ka = a.session_key(b.public(), b"secret");
        assert_eq!(ka, b.session_key(a.public(), b"secret"));
        assert_ne!(ka, b.session_key(a.public(), b"secreT"));
        assert_ne!(ka, b.session_key(a.public(), b""));
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = SessionKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{k:?}"), "SessionKey(..)");
        let e = EphemeralKey::from_secret([0xcd; 32]);
        let s = format!("{e:?}");
        assert!(s.starts_with("EphemeralKey { public: ["), "{s}");
        assert!(s.ends_with(", .. }"), "{s}");
    }
}
