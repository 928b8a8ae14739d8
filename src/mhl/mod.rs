//! ASC MHL (the ASC Media Hash List, v2.0): the `ascmhl/` history a camera
//! card or delivery carries (one XML "generation" per copy or check, and
//! `ascmhl_chain.xml` linking them by their C4 ids).
//!
//! `read.rs` loads a history (beneath the watched root, no symlink
//! followed, every generation checked against the chain) and says what its
//! latest generation holds for each file; `write.rs` writes our generation
//! ("transfer" to the workspace) and extends the chain; this file holds the
//! hash formats and the one-read hasher that computes the sha256 the
//! service needs together with every format a history uses.

mod read;
mod write;

pub(crate) use read::{CHAIN, Checked, History, check};
pub(crate) use write::{Generation, GenerationFile, write_generation};

use std::collections::BTreeMap;

use md5::Digest as _;

/// The hash formats ASC MHL v2.0 names, in the order its schema lists
/// them inside a `<hash>` (the order a generation must write them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Format {
    C4,
    Md5,
    Sha1,
    Xxh128,
    Xxh3,
    Xxh64,
}

impl Format {
    pub(crate) const ALL: [Format; 6] = [
        Format::C4,
        Format::Md5,
        Format::Sha1,
        Format::Xxh128,
        Format::Xxh3,
        Format::Xxh64,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::C4 => "c4",
            Format::Md5 => "md5",
            Format::Sha1 => "sha1",
            Format::Xxh128 => "xxh128",
            Format::Xxh3 => "xxh3",
            Format::Xxh64 => "xxh64",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Two spellings of one digest are the same digest: hex is compared
    /// without regard to case (C4 ids are case-sensitive base58).
    pub(crate) fn same(self, a: &str, b: &str) -> bool {
        match self {
            Format::C4 => a.trim() == b.trim(),
            _ => a.trim().eq_ignore_ascii_case(b.trim()),
        }
    }
}

/// What one read of a file gives: the sha256 (the service's metadata) and
/// each ASC MHL format asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digests {
    pub sha256: String,
    pub mhl: BTreeMap<Format, String>,
}

/// sha256 plus any of the MHL formats, fed the same bytes once.
pub(crate) struct MultiHasher {
    sha256: sha2::Sha256,
    md5: Option<md5::Md5>,
    sha1: Option<sha1::Sha1>,
    /// One xxh3 state gives both the 64- and the 128-bit digest.
    xxh3: Option<xxhash_rust::xxh3::Xxh3Default>,
    xxh64: Option<xxhash_rust::xxh64::Xxh64>,
    c4: Option<sha2::Sha512>,
    formats: Vec<Format>,
}

impl MultiHasher {
    pub(crate) fn new(formats: &[Format]) -> MultiHasher {
        let has = |f: Format| formats.contains(&f);
        let mut formats: Vec<Format> = formats.to_vec();
        formats.sort();
        formats.dedup();
        MultiHasher {
            sha256: sha2::Sha256::new(),
            md5: has(Format::Md5).then(md5::Md5::new),
            sha1: has(Format::Sha1).then(sha1::Sha1::new),
            xxh3: (has(Format::Xxh3) || has(Format::Xxh128)).then(xxhash_rust::xxh3::Xxh3Default::new),
            xxh64: has(Format::Xxh64).then(|| xxhash_rust::xxh64::Xxh64::new(0)),
            c4: has(Format::C4).then(sha2::Sha512::new),
            formats,
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(h) = &mut self.md5 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.xxh3 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.xxh64 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.c4 {
            h.update(bytes);
        }
    }

    pub(crate) fn finish(self) -> Digests {
        let mut mhl = BTreeMap::new();
        for f in &self.formats {
            let v = match f {
                Format::Md5 => self.md5.as_ref().map(|h| hex::encode(h.clone().finalize())),
                Format::Sha1 => self.sha1.as_ref().map(|h| hex::encode(h.clone().finalize())),
                Format::Xxh3 => self.xxh3.as_ref().map(|h| format!("{:016x}", h.digest())),
                Format::Xxh128 => self.xxh3.as_ref().map(|h| format!("{:032x}", h.digest128())),
                Format::Xxh64 => self.xxh64.as_ref().map(|h| format!("{:016x}", h.digest())),
                Format::C4 => self.c4.as_ref().map(|h| c4_of_digest(&h.clone().finalize())),
            };
            if let Some(v) = v {
                mhl.insert(*f, v);
            }
        }
        Digests {
            sha256: hex::encode(self.sha256.finalize()),
            mhl,
        }
    }
}

/// The C4 id of some bytes (SMPTE ST 2114: "c4" and the SHA-512 digest in
/// base58, padded to 90 characters).
pub(crate) fn c4_of(bytes: &[u8]) -> String {
    c4_of_digest(&sha2::Sha512::digest(bytes))
}

fn c4_of_digest(digest: &[u8]) -> String {
    const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    // Long division of the big-endian number by 58, digit by digit.
    let mut n: Vec<u8> = digest.to_vec();
    let mut out = Vec::with_capacity(88);
    while n.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 58) as u8;
            rem = cur % 58;
        }
        out.push(ALPHABET[rem as usize]);
    }
    while out.len() < 88 {
        out.push(b'1');
    }
    out.reverse();
    format!("c4{}", String::from_utf8_lossy(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from the ASC reference tool's C4 and python's xxhash and
    // hashlib for the same bytes.
    #[test]
    fn every_format_of_known_bytes() {
        let mut h = MultiHasher::new(&Format::ALL);
        h.update(b"hello ");
        h.update(b"world\n");
        let d = h.finish();
        assert_eq!(
            d.sha256,
            "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
        );
        assert_eq!(d.mhl[&Format::Md5], "6f5902ac237024bdd0c176cb93063dc4");
        assert_eq!(d.mhl[&Format::Sha1], "22596363b3de40b06f981fb85d82312e8c0ed511");
        assert_eq!(d.mhl[&Format::Xxh64], XXH64);
        assert_eq!(d.mhl[&Format::Xxh3], XXH3);
        assert_eq!(d.mhl[&Format::Xxh128], XXH128);
        assert_eq!(d.mhl[&Format::C4], C4);
        assert_eq!(c4_of(b"hello world\n"), C4);
    }

    const XXH64: &str = "5215e13b207d6d8c";
    const XXH3: &str = "d42f7ed4b73c6bde";
    const XXH128: &str = "eefac9d87100cd1336b2e733a5484425";
    const C4: &str =
        "c45PDQdgo41nG9RopnFaMCwBng3fnziEXcJEdPpFh8JeTeLXkHHAji8Zx8fwbwtBV5paRGPUZyrN5yhWLMrmfGyUNN";
}
