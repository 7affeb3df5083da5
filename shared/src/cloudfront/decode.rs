//! Undoing CloudFront's URL-encoding of log values.
//!
//! CloudFront percent-encodes bytes 0–32, 127 and above, a set of punctuation and `%` itself.
//! The one rule cf2bq applies:
//!
//! * **URI stem and query** (`Encoding::OneLayer`): the client sent these already
//!   percent-encoded on the request line, and CloudFront adds one layer (`%20` → `%2520`).
//!   We remove exactly one layer, which gives back the bytes the client sent.
//! * **User-Agent and Referer** (`Encoding::UpToTwoLayers`): the client sent raw text.
//!   CloudFront encodes it twice today (a space is logged as `%2520`) and encoded it once for a
//!   while in 2013 (`%20`). We remove one layer, then a second one if the result still holds
//!   `%XX` escapes. Because a client *could* have sent a literal `%20`, a value decoded twice
//!   is ambiguous: the raw logged value is then kept too (the `raw_fields` column), so nothing
//!   is ever lost.
//! * A layer whose result would not be valid UTF-8 (say `%FF`) is not removed: the value stays
//!   as logged, which is always valid ASCII.

use super::fields::Encoding;
use super::parse::matching_bytes;

/// How many layers of encoding were removed from a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The value contained no escapes (or none we could remove): use it as logged.
    Unchanged,
    /// One layer removed; the result is in the output buffer.
    OneLayer,
    /// Two layers removed; the result is in the output buffer and the raw value must be kept.
    TwoLayers,
}

/// Buffers reused between calls so decoding does not allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    first: Vec<u8>,
    /// What [`decode`] hands on as text.
    decoded: Vec<u8>,
}

/// Bytes a decoder may write past the end of the value's length (whole words).
pub const DECODE_SLACK: usize = 8;

/// Decodes `value` by `encoding`, appending the result to `out` unless it is unchanged.
pub fn decode(value: &str, encoding: Encoding, out: &mut String, scratch: &mut Scratch) -> Decoded {
    let Scratch { first, decoded } = scratch;
    decoded.clear();
    let result = decode_bytes(value.as_bytes(), encoding, decoded, first);
    if result != Decoded::Unchanged {
        // Always UTF-8 (see `decode_into`); checked here rather than assumed.
        match std::str::from_utf8(decoded) {
            Ok(text) => out.push_str(text),
            Err(_) => return Decoded::Unchanged,
        }
    }
    result
}

/// Like [`decode_into`], appending the result to `out` unless it is unchanged.
fn decode_bytes(
    value: &[u8],
    encoding: Encoding,
    out: &mut Vec<u8>,
    first: &mut Vec<u8>,
) -> Decoded {
    let start = out.len();
    out.resize(start + value.len() + DECODE_SLACK, 0);
    let (decoded, len) = decode_layers(value, encoding, &mut out[start..], first);
    out.truncate(start + len);
    decoded
}

/// Decodes `value` by `encoding` into the start of `out`, which needs room for
/// `value.len() + DECODE_SLACK` bytes; returns how, and the decoded length (0 when
/// unchanged: `out` then holds nothing of use). `value` must be valid UTF-8, and then the
/// decoded bytes are too. Only a decoded byte of 0x80 or more can break UTF-8, so only a
/// layer that has one is checked: most values are decoded without looking at them twice.
/// Writing into a slice lets a caller decode straight into its output.
pub fn decode_into(
    value: &[u8],
    encoding: Encoding,
    out: &mut [u8],
    scratch: &mut Scratch,
) -> (Decoded, usize) {
    decode_layers(value, encoding, out, &mut scratch.first)
}

fn decode_layers(
    value: &[u8],
    encoding: Encoding,
    out: &mut [u8],
    first: &mut Vec<u8>,
) -> (Decoded, usize) {
    match encoding {
        Encoding::OneLayer => match percent_decode_into(value, out) {
            (escapes, len) if keeps(&out[..len], escapes) => (Decoded::OneLayer, len),
            _ => (Decoded::Unchanged, 0),
        },
        Encoding::UpToTwoLayers => decode_both_layers_at_once(value, out)
            .unwrap_or_else(|| decode_layer_by_layer(value, out, first)),
    }
}

/// Up to two layers, one after the other, for any value.
fn decode_layer_by_layer(value: &[u8], out: &mut [u8], first: &mut Vec<u8>) -> (Decoded, usize) {
    first.resize(value.len() + DECODE_SLACK, 0);
    let (escapes, first_len) = percent_decode_into(value, first);
    let first = &first[..first_len];
    if !keeps(first, escapes) {
        return (Decoded::Unchanged, 0);
    }
    // The second layer straight into `out`: without escapes it is the first one.
    let (escapes, len) = percent_decode_into(first, out);
    if escapes == Escapes::None {
        return (Decoded::OneLayer, len);
    }
    if keeps(&out[..len], escapes) {
        return (Decoded::TwoLayers, len);
    }
    // The second layer would be invalid UTF-8: stop after one layer.
    out[..first_len].copy_from_slice(first);
    (Decoded::OneLayer, first_len)
}

/// Both layers in one pass, for the values CloudFront writes today: `%25XX` escapes (a byte
/// the second layer gives) and `%XX` ones, each giving ASCII. `None` for anything else (a
/// `%` that is not such an escape, or a byte of 0x80 or more), which is then decoded layer
/// by layer. Only then can the first layer's output hold a `%` that does not start a whole
/// second-layer escape, so the two ways agree wherever this answers.
fn decode_both_layers_at_once(input: &[u8], out: &mut [u8]) -> Option<(Decoded, usize)> {
    let (mut layers, mut high) = (0, 0u8);
    let len = copy_decoding(input, out, |from| {
        // `%25XX` is a second-layer escape, five bytes; `%XX` a first-layer one.
        let (byte, len, escape_layers) = match escape(from, 1)? {
            b'%' => (escape(from, 3)?, 5, 2),
            byte => (byte, 3, 1),
        };
        layers = layers.max(escape_layers);
        high |= byte;
        Some(At::Byte(byte, len))
    })?;
    match (layers, high >= 0x80) {
        (_, true) => None,
        (0, false) => Some((Decoded::Unchanged, 0)),
        (1, false) => Some((Decoded::OneLayer, len)),
        _ => Some((Decoded::TwoLayers, len)),
    }
}

/// Whether a layer just decoded is kept: it removed an escape and is still UTF-8.
fn keeps(layer: &[u8], escapes: Escapes) -> bool {
    match escapes {
        Escapes::None => false,
        Escapes::Ascii => true,
        Escapes::NonAscii => std::str::from_utf8(layer).is_ok(),
    }
}

/// What one layer of decoding found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escapes {
    None,
    /// Every escape gave a byte below 0x80: UTF-8 in gives UTF-8 out.
    Ascii,
    /// Some escape gave a byte of 0x80 or more, which may not be valid UTF-8.
    NonAscii,
}

/// Removes one layer of percent-encoding into the start of `out` (room for
/// `input.len() + DECODE_SLACK`), and says what escapes (`%XX`, two hex digits) it found and
/// how long the result is. A `%` not followed by two hex digits is kept as is.
fn percent_decode_into(input: &[u8], out: &mut [u8]) -> (Escapes, usize) {
    let (mut escaped, mut high) = (false, 0u8);
    let len = copy_decoding(input, out, |from| {
        Some(match escape(from, 1) {
            Some(byte) => {
                escaped = true;
                high |= byte;
                At::Byte(byte, 3)
            }
            None => At::Percent,
        })
    })
    .expect("a `%` that is no escape is kept");
    let escapes = match (escaped, high >= 0x80) {
        (false, _) => Escapes::None,
        (true, false) => Escapes::Ascii,
        (true, true) => Escapes::NonAscii,
    };
    (escapes, len)
}

/// What is made of the input from a `%` on.
enum At {
    /// This byte, in place of the input's first `.1` bytes.
    Byte(u8, usize),
    /// The `%` itself.
    Percent,
}

/// `%` in every byte of a word.
const PERCENTS: u64 = 0x2525_2525_2525_2525;

/// Writes `input` to the start of `buf` (room for `input.len() + DECODE_SLACK`) with each
/// `%` replaced as `at_percent` says, given the input from that `%` on; returns the length
/// written. `None` when `at_percent` gave up (`None`), with a partial result in `buf`.
///
/// One pass, eight bytes at a time in plain integer registers: a word is copied whole, then
/// the output advances only to its first `%` (encoded User-Agents hold an escape every few
/// bytes, so neither a search call per escape nor a test per byte is cheap; a bitmask per 64
/// bytes measured slower on the many short values).
#[inline(always)]
fn copy_decoding(
    input: &[u8],
    buf: &mut [u8],
    mut at_percent: impl FnMut(&[u8]) -> Option<At>,
) -> Option<usize> {
    // Room for a whole word written at the last output position.
    let buf = &mut buf[..input.len() + DECODE_SLACK];
    let (mut i, mut j) = (0, 0);
    while i < input.len() {
        if let Some(word) = input.get(i..i + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            buf[j..j + 8].copy_from_slice(&word.to_le_bytes());
            let percents = matching_bytes(word, PERCENTS);
            if percents == 0 {
                i += 8;
                j += 8;
                continue;
            }
            let literal = percents.trailing_zeros() as usize / 8;
            i += literal;
            j += literal;
        } else if input[i] != b'%' {
            buf[j] = input[i];
            i += 1;
            j += 1;
            continue;
        }
        // `input[i]` is a `%`.
        (buf[j], i) = match at_percent(&input[i..])? {
            At::Byte(byte, len) => (byte, i + len),
            At::Percent => (b'%', i + 1),
        };
        j += 1;
    }
    Some(j)
}

/// The byte of the escape whose two hex digits start at `from[at]`, if they are there.
#[inline(always)]
fn escape(from: &[u8], at: usize) -> Option<u8> {
    let digits = from.get(at..at + 2)?;
    Some(hex(digits[0])? << 4 | hex(digits[1])?)
}

#[inline]
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: &str, encoding: Encoding) -> (String, Decoded) {
        let mut out = String::from("prefix|");
        let d = decode(value, encoding, &mut out, &mut Scratch::default());
        let decoded = match d {
            Decoded::Unchanged => value.to_string(),
            _ => out["prefix|".len()..].to_string(),
        };
        (decoded, d)
    }

    #[test]
    fn user_agent_single_and_double_encoded_give_the_same_text() {
        let single = run(
            "Mozilla/5.0%20(Windows%20NT%2010.0)",
            Encoding::UpToTwoLayers,
        );
        let double = run(
            "Mozilla/5.0%2520(Windows%2520NT%252010.0)",
            Encoding::UpToTwoLayers,
        );
        assert_eq!(
            single,
            ("Mozilla/5.0 (Windows NT 10.0)".into(), Decoded::OneLayer)
        );
        assert_eq!(
            double,
            ("Mozilla/5.0 (Windows NT 10.0)".into(), Decoded::TwoLayers)
        );
    }

    #[test]
    fn query_loses_exactly_one_layer() {
        assert_eq!(
            run("q=a%2520b&x=%2526", Encoding::OneLayer),
            ("q=a%20b&x=%26".into(), Decoded::OneLayer)
        );
        assert_eq!(
            run("a=b&c=d", Encoding::OneLayer),
            ("a=b&c=d".into(), Decoded::Unchanged)
        );
    }

    #[test]
    fn invalid_utf8_and_broken_escapes_are_kept_as_logged() {
        assert_eq!(
            run("abc%FFdef", Encoding::UpToTwoLayers),
            ("abc%FFdef".into(), Decoded::Unchanged)
        );
        assert_eq!(
            run("100%", Encoding::OneLayer),
            ("100%".into(), Decoded::Unchanged)
        );
        assert_eq!(
            run("%zz%41", Encoding::OneLayer),
            ("%zzA".into(), Decoded::OneLayer)
        );
        // Second layer would be invalid UTF-8: only the first is removed.
        assert_eq!(
            run("x%25FF", Encoding::UpToTwoLayers),
            ("x%FF".into(), Decoded::OneLayer)
        );
    }

    /// Runs a decoder on room for `input` as the callers make it; returns what it wrote and
    /// what it said.
    fn into_room<T>(input: &[u8], decoder: impl FnOnce(&mut [u8]) -> (T, usize)) -> (Vec<u8>, T) {
        let mut out = vec![0; input.len() + DECODE_SLACK];
        let (said, len) = decoder(&mut out);
        out.truncate(len);
        (out, said)
    }

    /// A pseudo-random index below `n` (a simple LCG: the same inputs every run).
    fn pick(state: &mut u64, n: usize) -> usize {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (*state >> 33) as usize % n
    }

    #[test]
    fn one_layer_is_removed_like_a_plain_byte_by_byte_decoder() {
        // The obvious decoder, to compare with.
        fn reference(input: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut i = 0;
            while i < input.len() {
                let escape = (input[i] == b'%')
                    .then(|| input.get(i + 1..i + 3))
                    .flatten()
                    .and_then(|h| Some(hex(h[0])? << 4 | hex(h[1])?));
                match escape {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(input[i]);
                        i += 1;
                    }
                }
            }
            out
        }
        let alphabet = b"%%2a5F0gz ";
        let check = |input: &[u8]| {
            let (out, escaped) = into_room(input, |out| percent_decode_into(input, out));
            let expected = reference(input);
            assert_eq!(out, expected, "{:?}", String::from_utf8_lossy(input));
            // The inputs are ASCII, so a high byte out came from an escape.
            let high = expected.iter().any(|&b| b >= 0x80);
            assert_eq!(
                escaped != Escapes::None,
                expected.len() < input.len(),
                "{input:?}"
            );
            assert_eq!(escaped == Escapes::NonAscii, high, "{input:?}");
        };
        for len in 0..9 {
            for n in 0..alphabet.len().pow(len as u32).min(20_000) {
                let input: Vec<u8> = (0..len)
                    .map(|k| alphabet[n / alphabet.len().pow(k as u32) % alphabet.len()])
                    .collect();
                check(&input);
            }
        }
        // Longer inputs, whole words and escapes across word boundaries (a simple LCG).
        let mut state = 1u64;
        for len in 9..70 {
            for _ in 0..400 {
                let input: Vec<u8> = (0..len)
                    .map(|_| alphabet[pick(&mut state, alphabet.len())])
                    .collect();
                check(&input);
            }
        }
    }

    #[test]
    fn both_layers_at_once_agree_with_one_layer_after_the_other() {
        let alphabet: &[&[u8]] = &[
            b"%", b"25", b"2", b"5", b"41", b"a", b"F", b"C3", b"g", b" ", b"%25",
        ];
        let mut state = 7u64;
        let (mut answered, mut left) = (0, 0);
        for len in 0..12 {
            for _ in 0..3000 {
                let input: Vec<u8> = (0..len)
                    .flat_map(|_| alphabet[pick(&mut state, alphabet.len())].iter().copied())
                    .collect();
                let mut at_once = vec![0; input.len() + DECODE_SLACK];
                let Some((decoded, len)) = decode_both_layers_at_once(&input, &mut at_once) else {
                    left += 1;
                    continue;
                };
                answered += 1;
                let (layered, expected) = into_room(&input, |out| {
                    decode_layer_by_layer(&input, out, &mut Vec::new())
                });
                let input = String::from_utf8_lossy(&input);
                assert_eq!(decoded, expected, "{input}");
                assert_eq!(&at_once[..len], layered, "{input}");
            }
        }
        // Both kinds of input came up often.
        assert!(
            answered > 5000 && left > 5000,
            "{answered} answered, {left} left"
        );
    }

    #[test]
    fn utf8_survives_double_encoding() {
        assert_eq!(
            run("caf%25C3%25A9", Encoding::UpToTwoLayers),
            ("café".into(), Decoded::TwoLayers)
        );
    }
}
