//! SHA-256 whose running state can be saved and resumed: a layer's diff_id continues from the
//! state saved at a chunk boundary instead of hashing again the unchanged chunks before it.

use sha2::digest::generic_array::GenericArray;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const INITIAL: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Blocks handed to the compression function per call (the SHA extensions go faster on runs).
const BATCH: usize = 64;

/// A SHA-256 computation stopped after some bytes: the compression state, the bytes of the
/// last partial block and the count so far. Saved beside a chunk so a later layer whose
/// first chunks are the same bytes resumes hashing after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashState {
    words: [u32; 8],
    tail: Vec<u8>,
    len: u64,
}

impl HashState {
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A compact form to store: 32 bytes of state, 8 of length, then the partial block.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40usize.saturating_add(self.tail.len()));
        for word in self.words {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.tail);
        out
    }

    /// Reads [`HashState::to_bytes`]'s form back; `None` when it is not consistent.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (words_bytes, rest) = bytes.split_at_checked(32)?;
        let (len_bytes, tail) = rest.split_at_checked(8)?;
        let len = u64::from_le_bytes(len_bytes.try_into().ok()?);
        if tail.len() as u64 != len % 64 {
            return None;
        }
        let mut words = [0u32; 8];
        for (word, b) in words.iter_mut().zip(words_bytes.chunks_exact(4)) {
            *word = u32::from_be_bytes(b.try_into().ok()?);
        }
        Some(HashState {
            words,
            tail: tail.to_vec(),
            len,
        })
    }
}

/// Streaming SHA-256 (through `sha2`'s compression function, so with the CPU's SHA
/// instructions where there are some) that can hand out and take back a [`HashState`].
#[derive(Clone)]
pub(crate) struct Sha256Stream {
    words: [u32; 8],
    block: [u8; 64],
    filled: usize,
    len: u64,
    batch: Vec<GenericArray<u8, sha2::digest::consts::U64>>,
}

impl Sha256Stream {
    pub(crate) fn new() -> Self {
        Sha256Stream {
            words: INITIAL,
            block: [0; 64],
            filled: 0,
            len: 0,
            batch: vec![GenericArray::default(); BATCH],
        }
    }

    pub(crate) fn resume(state: &HashState) -> Self {
        let mut s = Sha256Stream::new();
        s.words = state.words;
        s.len = state.len;
        s.filled = state.tail.len().min(63);
        s.block[..s.filled].copy_from_slice(&state.tail[..s.filled]);
        s
    }

    pub(crate) fn state(&self) -> HashState {
        HashState {
            words: self.words,
            tail: self.block[..self.filled].to_vec(),
            len: self.len,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.saturating_add(data.len() as u64);
        if self.filled > 0 {
            let take = data.len().min(64usize.saturating_sub(self.filled));
            let end = self.filled.saturating_add(take);
            self.block[self.filled..end].copy_from_slice(&data[..take]);
            self.filled = end;
            data = &data[take..];
            if self.filled < 64 {
                return;
            }
            sha2::compress256(&mut self.words, &[self.block.into()]);
            self.filled = 0;
        }
        let mut blocks = data.chunks_exact(64);
        loop {
            // Whole blocks are copied into the batch with memcpy (`copy_from_slice`), never
            // byte by byte through an iterator: this runs over every byte of every layer.
            let mut count = 0usize;
            for (slot, block) in self.batch.iter_mut().zip(blocks.by_ref()) {
                slot.copy_from_slice(block);
                count = count.saturating_add(1);
            }
            let Some(full) = self.batch.get(..count).filter(|b| !b.is_empty()) else {
                break;
            };
            sha2::compress256(&mut self.words, full);
        }
        let rest = blocks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    pub(crate) fn finalize(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        // Pad to 56 bytes past a block boundary, then the 64-bit length.
        let zeros = (119usize.saturating_sub(self.filled)) % 64;
        let pad_len = zeros.saturating_add(1);
        let len_before = self.len;
        self.update(&pad[..pad_len]);
        self.update(&bits.to_be_bytes());
        self.len = len_before;
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn matches_sha2_for_every_split_and_resumes() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 4097, 5000] {
            let expected: [u8; 32] = Sha256::digest(&data[..n]).into();
            let mut one = Sha256Stream::new();
            one.update(&data[..n]);
            assert_eq!(one.finalize(), expected, "length {n}");
            for cut in [0, 1.min(n), n / 3, n / 2, n] {
                let mut first = Sha256Stream::new();
                first.update(&data[..cut]);
                let saved = HashState::from_bytes(&first.state().to_bytes()).unwrap();
                assert_eq!(saved.len(), cut as u64);
                let mut second = Sha256Stream::resume(&saved);
                second.update(&data[cut..n]);
                assert_eq!(second.finalize(), expected, "length {n} cut {cut}");
            }
        }
    }

    #[test]
    fn inconsistent_saved_states_are_refused() {
        let mut s = Sha256Stream::new();
        s.update(b"abc");
        let mut bytes = s.state().to_bytes();
        assert!(HashState::from_bytes(&bytes).is_some());
        bytes.pop();
        assert!(HashState::from_bytes(&bytes).is_none());
        assert!(HashState::from_bytes(&[0; 10]).is_none());
    }
}
