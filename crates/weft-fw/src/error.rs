//! The crate's one error type.

/// Why a rule set could not be built, applied, listed or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FwError {
    /// The `nft` binary is not on `PATH` (or not at the configured path).
    #[error("nft not found: install the nftables package")]
    NftNotFound,
    /// `ip` is needed to run `nft` inside a named network namespace, and is missing.
    #[error("ip not found: install the iproute2 package")]
    IpNotFound,
    /// `nft` ran and refused the input or the command; the first line of its stderr.
    #[error("nft rejected the request: {0}")]
    Rejected(String),
    /// `nft` could not be started or talked to for another reason.
    #[error("running nft: {0}")]
    Io(#[from] std::io::Error),
    /// An interface name that Linux or nft would not accept as an exact name.
    #[error(
        "invalid interface name {0:?}: want 1-15 bytes, no '/', '*', '\\\\', whitespace or NUL"
    )]
    InvalidInterface(String),
    /// `iptables` (for Docker's `DOCKER-USER` chain) could not be started.
    #[error("running {0}")]
    Exec(String),
}
