//! Helpers shared by the privileged test files: the root gate, running async code inside a
//! namespace, and small lookups.
#![allow(dead_code)] // each test file uses its own subset

use std::future::Future;
use std::os::fd::OwnedFd;

use weft_netdev::{in_netns, Netdev};

/// Whether privileged tests run (`WEFT_TEST_ROOT=1`); says "skipped" when not.
pub(crate) fn privileged() -> bool {
    if std::env::var("WEFT_TEST_ROOT").as_deref() == Ok("1") {
        true
    } else {
        eprintln!("skipped: set WEFT_TEST_ROOT=1 (as root) to run privileged tests");
        false
    }
}

/// Runs `f` to completion on a current-thread runtime in a thread inside `ns`.
pub(crate) fn run_in<T, F, Fut>(ns: &OwnedFd, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
    .expect("entering test namespace")
}

/// Another descriptor for the same namespace, for a closure to own.
pub(crate) fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup namespace fd")
}

/// The index of link `name`; panics if there is none.
pub(crate) async fn index(nd: &Netdev, name: &str) -> u32 {
    nd.link(name)
        .await
        .expect("link lookup")
        .unwrap_or_else(|| panic!("no link {name}"))
        .index
}
