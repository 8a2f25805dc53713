//! Lowercase hexadecimal text of bytes: key ids, keys, digests and plan ids are written this
//! way in every file and message Outpost produces (decoding a 16-byte id is
//! [`crate::content_keys::hex16`]).

/// `bytes` as lowercase hex digits, two per byte (`[0x0a, 0xff]` → `"0aff"`).
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// A 16-byte id as a UUID string, `8-4-4-4-12` lowercase hex digits (how DASH's
/// `cenc:default_KID` writes a key id).
pub fn uuid(id: &[u8; 16]) -> String {
    let h = encode(id);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_groups_the_digits_8_4_4_4_12() {
        let id: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        assert_eq!(uuid(&id), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn encodes_lowercase_two_digits_per_byte() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x00, 0x0a, 0xff, 0x10]), "000aff10");
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(encode(&all), want);
    }
}
