//! Fuzzing entry points, one per decoder, compiled under `cfg(fuzzing)` (cargo-fuzz sets it)
//! and in unit tests. The targets in `fuzz/` are one-line shims over these, so the harness
//! logic lives (and is type-checked) next to the code it exercises. Each must never panic on
//! any input; a panic is a finding. The unit tests below replay the checked-in seed corpora.

use crate::gob::{Decoder, Encoder};

/// Decodes a gob stream; whatever decodes must re-encode and decode to the same values.
pub fn gob(data: &[u8]) {
    let mut input = data;
    let mut dec = Decoder::new();
    let mut values = Vec::new();
    while let Ok(Some(tv)) = dec.decode_next(&mut input) {
        values.push(tv);
    }
    let mut enc = Encoder::new();
    let mut again = Vec::new();
    for (ty, v) in &values {
        if let Err(e) = enc.encode(ty, v, &mut again) {
            panic!("decoded value does not re-encode: {e}");
        }
    }
    let mut input = &again[..];
    let mut dec = Decoder::new();
    for (ty, v) in &values {
        match dec.decode_next(&mut input) {
            // Debug text, not ==, so that NaN floats compare equal to themselves.
            Ok(Some((t2, v2))) => {
                assert_eq!(
                    format!("{ty:?}{v:?}"),
                    format!("{t2:?}{v2:?}"),
                    "round trip"
                );
            }
            other => panic!("re-encoded stream does not decode: {other:?}"),
        }
    }
}

/// Decodes a protocol message body.
pub fn protocol(data: &[u8]) {
    if let Ok(Some(msg)) = crate::protocol::ProtocolMsg::decode(data) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(
            crate::protocol::ProtocolMsg::decode(&out).ok().flatten(),
            Some(msg)
        );
    }
}

/// Decodes a topology gossip payload.
pub fn topology(data: &[u8]) {
    if let Ok(peers) = crate::topology::decode(data) {
        assert_eq!(
            crate::topology::decode(&crate::topology::encode(&peers)),
            Ok(peers)
        );
    }
}

/// Decodes a `weft-topology` payload; whatever decodes must re-encode to the same message.
pub fn topology_delta(data: &[u8]) {
    if let Ok(m) = crate::topology_delta::Message::decode(data) {
        match m.encode() {
            Ok(b) => assert_eq!(crate::topology_delta::Message::decode(&b), Ok(m)),
            Err(e) => panic!("decoded message does not re-encode: {e}"),
        }
    }
}

/// Decodes a handshake features map.
pub fn features(data: &[u8]) {
    if let Ok(map) = crate::features::decode(data) {
        assert_eq!(
            crate::features::decode(&crate::features::encode(&map)),
            Ok(map)
        );
    }
}

/// Parses a sleeve datagram and all its frames.
pub fn sleeve(data: &[u8]) {
    if let Ok((_, frames)) = crate::sleeve::parse(data) {
        for f in frames.flatten() {
            let _ = crate::sleeve::heartbeat_uid(f.data);
        }
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    /// Runs every file of `fuzz/corpus/<target>/` through `entry`; returns how many ran.
    fn replay(target: &str, entry: fn(&[u8])) -> usize {
        let dir: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "..",
            "..",
            "fuzz",
            "corpus",
            target,
        ]
        .iter()
        .collect();
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fuzz corpus {} missing: {e}", dir.display()));
        let mut n = 0;
        for file in entries {
            let path = file.unwrap().path();
            entry_point_on(&path, entry);
            n += 1;
        }
        n
    }

    fn entry_point_on(path: &std::path::Path, entry: fn(&[u8])) {
        let data = std::fs::read(path).unwrap();
        entry(&data);
        // Every prefix too: truncation is the commonest corruption.
        for cut in 0..data.len() {
            entry(data.get(..cut).unwrap_or_default());
        }
    }

    #[test]
    fn corpora_replay_without_panics() {
        assert!(replay("gob", super::gob) > 0);
        assert!(replay("protocol", super::protocol) > 0);
        assert!(replay("topology", super::topology) > 0);
        assert!(replay("features", super::features) > 0);
        assert!(replay("sleeve", super::sleeve) > 0);
        assert!(replay("topology_delta", super::topology_delta) > 0);
    }

    #[test]
    fn seeds_decode() {
        let dir = |t: &str| -> PathBuf {
            [env!("CARGO_MANIFEST_DIR"), "..", "..", "fuzz", "corpus", t]
                .iter()
                .collect()
        };
        let topo = std::fs::read(dir("topology").join("two-peers")).unwrap();
        assert_eq!(crate::topology::decode(&topo).unwrap().len(), 2);
        let feat = std::fs::read(dir("features").join("live-hostA")).unwrap();
        assert_eq!(crate::features::decode(&feat).unwrap().len(), 7);
        let hb = std::fs::read(dir("sleeve").join("heartbeat")).unwrap();
        let (_, mut frames) = crate::sleeve::parse(&hb).unwrap();
        let f = frames.next().unwrap().unwrap();
        assert_eq!(
            crate::sleeve::heartbeat_uid(f.data),
            Some(0x0102_0304_0506_0708)
        );
    }
}
