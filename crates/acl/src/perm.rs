//! Permission bits and their text forms (upstream `Permission`).

/// No access.
pub const DENY: u8 = 1;
/// Needed: either PUB or SUB.
pub const ANY: u8 = 1 << 1;
/// Produce.
pub const PUB: u8 = 1 << 2;
/// Consume.
pub const SUB: u8 = 1 << 3;

/// Request codes only an admin account may send (upstream `Permission.ADMIN_CODE`).
pub const ADMIN_CODES: &[i32] = &[
    remoting::RequestCode::UPDATE_AND_CREATE_TOPIC,
    remoting::RequestCode::UPDATE_BROKER_CONFIG,
    remoting::RequestCode::DELETE_TOPIC_IN_BROKER,
    remoting::RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    remoting::RequestCode::DELETE_SUBSCRIPTIONGROUP,
];

/// `DENY`, `PUB`, `SUB`, `PUB|SUB` or `SUB|PUB`; anything else (or nothing) denies.
pub fn parse(text: Option<&str>) -> u8 {
    match text.map(str::trim) {
        Some("PUB") => PUB,
        Some("SUB") => SUB,
        Some("PUB|SUB") | Some("SUB|PUB") => PUB | SUB,
        _ => DENY,
    }
}

/// Whether `owned` grants `needed` (upstream `Permission.checkPermission`).
pub fn allows(needed: u8, owned: u8) -> bool {
    if owned & DENY != 0 {
        return false;
    }
    if needed & ANY != 0 {
        return owned & (PUB | SUB) != 0;
    }
    needed & owned != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_check_as_upstream() {
        assert_eq!(parse(Some(" PUB|SUB ")), PUB | SUB);
        assert_eq!(parse(Some("SUB|PUB")), PUB | SUB);
        assert_eq!(parse(Some("nonsense")), DENY);
        assert_eq!(parse(None), DENY);
        assert!(allows(PUB, PUB | SUB));
        assert!(!allows(PUB, SUB));
        assert!(!allows(SUB, DENY | SUB));
        assert!(allows(ANY, SUB));
        assert!(!allows(ANY, DENY));
    }
}
