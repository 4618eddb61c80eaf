//! The tag hash: what a broker stores in consume-queue units and matches a pull's
//! subscription against, and what a client sends in a heartbeat's `codeSet` (upstream
//! `tagsString2tagsCode`). Both sides must use this one function.

/// Java's `String.hashCode` of `s` (over UTF-16 code units, wrapping).
pub fn java_hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The tag hash a broker stores in consume-queue units and a client sends in `codeSet`:
/// Java's `String.hashCode` of the tag (over UTF-16 code units), widened to `i64`.
///
/// ```
/// assert_eq!(message::tags_hash_code("TagA"), 2598919);
/// ```
pub fn tags_hash_code(tags: &str) -> i64 {
    i64::from(java_hash_code(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_code_matches_java() {
        // Values computed with java.lang.String#hashCode.
        assert_eq!(java_hash_code(""), 0);
        assert_eq!(java_hash_code("TagA"), 2_598_919);
        assert_eq!(java_hash_code("hello world"), 1_794_106_052);
        assert_eq!(java_hash_code("polygenelubricants"), i32::MIN);
        // Non-BMP characters hash as two UTF-16 code units.
        assert_eq!(java_hash_code("\u{1F600}"), 1_772_899);
        assert_eq!(tags_hash_code(""), 0);
        assert_eq!(tags_hash_code("TagA"), 2_598_919);
    }
}
