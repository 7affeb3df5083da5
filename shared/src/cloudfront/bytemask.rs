//! Where one byte value occurs in 64 bytes, as a bitmask (bit `i` set when `block[i]` is the
//! byte). Splitting a line with it costs a few vector instructions per 64 bytes and then one
//! bit scan per field; searching word by word cost a mispredicted branch on most fields.
//!
//! SSE2 on x86-64 and NEON on arm64: both are part of those targets' baseline, so there is
//! no run-time detection. Other targets compare eight bytes at a time in integer registers.

/// Bytes looked at by one [`block_mask`].
pub(crate) const BLOCK: usize = 64;

/// Bit `i` is set when `block[i] == byte`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
pub(crate) fn block_mask(block: &[u8; BLOCK], byte: u8) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let mut mask = 0;
    // SAFETY: SSE2 is enabled (the cfg above); each lane is 16 readable bytes, and the load
    // takes any alignment.
    unsafe {
        let needle = _mm_set1_epi8(byte as i8);
        for (i, lane) in block.chunks_exact(16).enumerate() {
            let lane = _mm_loadu_si128(lane.as_ptr().cast::<__m128i>());
            let found = _mm_movemask_epi8(_mm_cmpeq_epi8(lane, needle)) as u16;
            mask |= u64::from(found) << (16 * i);
        }
    }
    mask
}

/// Bit `i` is set when `block[i] == byte`.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[inline(always)]
pub(crate) fn block_mask(block: &[u8; BLOCK], byte: u8) -> u64 {
    use std::arch::aarch64::{
        uint8x16_t, vandq_u8, vceqq_u8, vdupq_n_u8, vgetq_lane_u64, vld1q_u8, vpaddq_u8,
        vreinterpretq_u64_u8,
    };
    // NEON has no byte-to-bit gather: each matching byte keeps its own bit of a byte, and
    // pairwise adds fold sixteen lanes into two bytes.
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: NEON is enabled (the cfg above); `BITS` and each lane are 16 readable bytes,
    // and the loads take any alignment.
    unsafe {
        let needle = vdupq_n_u8(byte);
        let bits = vld1q_u8(BITS.as_ptr());
        let lane = |i: usize| -> uint8x16_t {
            vandq_u8(vceqq_u8(vld1q_u8(block[16 * i..].as_ptr()), needle), bits)
        };
        let halves = (vpaddq_u8(lane(0), lane(1)), vpaddq_u8(lane(2), lane(3)));
        let quarters = vpaddq_u8(halves.0, halves.1);
        let bytes = vpaddq_u8(quarters, quarters);
        vgetq_lane_u64::<0>(vreinterpretq_u64_u8(bytes))
    }
}

/// Bit `i` is set when `block[i] == byte`.
#[cfg(not(any(
    all(target_arch = "x86_64", target_feature = "sse2"),
    all(target_arch = "aarch64", target_feature = "neon")
)))]
#[inline(always)]
pub(crate) fn block_mask(block: &[u8; BLOCK], byte: u8) -> u64 {
    block_mask_by_words(block, byte)
}

/// [`block_mask`] without vector instructions, eight bytes at a time (tested everywhere).
#[cfg(any(
    test,
    not(any(
        all(target_arch = "x86_64", target_feature = "sse2"),
        all(target_arch = "aarch64", target_feature = "neon")
    ))
))]
#[inline(always)]
fn block_mask_by_words(block: &[u8; BLOCK], byte: u8) -> u64 {
    let splat = u64::from(byte) * 0x0101_0101_0101_0101;
    let mut mask = 0;
    for (i, word) in block.chunks_exact(8).enumerate() {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // The high bits of the matching bytes, gathered into one byte by a multiply whose
        // partial products never overlap.
        let high_bits = super::parse::matching_bytes(word, splat);
        let found = (high_bits >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        mask |= found << (8 * i);
    }
    mask
}

/// Bit `i` is set when `bytes[from + i] == byte`, for the up to 64 bytes from `from` (which
/// must be within `bytes`).
#[inline(always)]
pub(crate) fn mask_from(bytes: &[u8], from: usize, byte: u8) -> u64 {
    if let Some(block) = bytes.get(from..from + BLOCK) {
        return block_mask(block.try_into().expect("a block"), byte);
    }
    let tail = bytes.len() - from;
    if let Some(last) = bytes.len().checked_sub(BLOCK) {
        // The line's last 64 bytes, shifted past those already looked at: no copy.
        let block = bytes[last..].try_into().expect("a block");
        return block_mask(block, byte) >> (BLOCK - tail);
    }
    let mut block = [0; BLOCK];
    block[..tail].copy_from_slice(&bytes[from..]);
    block_mask(&block, byte) & ((1 << tail) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(bytes: &[u8], byte: u8) -> u64 {
        bytes
            .iter()
            .take(BLOCK)
            .enumerate()
            .filter(|(_, b)| **b == byte)
            .fold(0, |mask, (i, _)| mask | 1 << i)
    }

    #[test]
    fn every_position_of_every_byte_value_is_found() {
        for byte in 0..=255u8 {
            for at in 0..BLOCK {
                let mut block = [byte.wrapping_add(1); BLOCK];
                block[at] = byte;
                block[(at * 7 + 3) % BLOCK] = byte;
                assert_eq!(
                    block_mask(&block, byte),
                    expected(&block, byte),
                    "{byte} at {at}"
                );
            }
        }
    }

    #[test]
    fn near_misses_are_not_found() {
        // Bytes one bit away from the one looked for, and its high-bit twin.
        for byte in [b'\t', b' ', b'|', b'%', b'\n', 0, 0x7f, 0x80, 0xff] {
            let block: [u8; BLOCK] = std::array::from_fn(|i| match i % 5 {
                0 => byte,
                1 => byte ^ 0x80,
                2 => byte ^ 1,
                3 => byte.wrapping_sub(1),
                _ => byte.wrapping_add(1),
            });
            let want = expected(&block, byte);
            assert_eq!(block_mask(&block, byte), want, "{byte}");
            assert_eq!(block_mask_by_words(&block, byte), want, "{byte}");
        }
    }

    #[test]
    fn a_mask_from_any_offset_covers_only_what_is_there() {
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| if i % 3 == 0 || i % 7 == 0 { b'\t' } else { 0 })
                .collect();
            for from in 0..len {
                assert_eq!(
                    mask_from(&bytes, from, b'\t'),
                    expected(&bytes[from..], b'\t'),
                    "{len} {from}"
                );
                assert_eq!(
                    mask_from(&bytes, from, 0),
                    expected(&bytes[from..], 0),
                    "{len} {from}"
                );
            }
        }
    }
}
