#!/usr/bin/env bash
# All tests: unit, property and simulation tests (cargo test), then the privileged
# end-to-end tests in network namespaces (scripts/e2e.sh). Needs root for the latter.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weft-target}"
cargo build --release -p weft
cargo build --release -p weft-core --example hostile_peer --example fake_upstream
cargo build --release -p weftd --example raw_stream
# weavewait (/w/w in containers of the Docker API proxy): static, in a workspace of its own.
(cd crates/weft-wait && cargo build --release --target x86_64-unknown-linux-gnu &&
    cargo test --release --target x86_64-unknown-linux-gnu)
# Privileged tests (netlink, nftables) run in namespaces of their own; CI runs as root.
WEFT_TEST_ROOT=1 cargo test --workspace --release
scripts/e2e.sh
