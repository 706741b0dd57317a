//! Topic ids as Kafka prints them: URL-safe base64 of the 16 UUID bytes, no padding.

use uuid::Uuid;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn encode(id: Uuid) -> String {
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_22_chars() {
        let s = super::encode(uuid::Uuid::from_u128(0));
        assert_eq!(s, "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(
            super::encode(uuid::Uuid::from_u128(u128::MAX)),
            "_____________________w"
        );
    }
}
