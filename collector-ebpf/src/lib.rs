//! Empty library target: `collector/build.rs` lists this crate as a
//! build-dependency so cargo rebuilds the eBPF object when it changes, and a
//! build-dependency needs a library.
#![no_std]
