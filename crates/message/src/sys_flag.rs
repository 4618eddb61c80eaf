//! The bits of a message's SYSFLAG field (upstream `MessageSysFlag`): compression, transaction
//! type and the address family of the two hosts in a stored record.

/// Bits of a message's system flag (upstream `MessageSysFlag`).
#[derive(Clone, Copy, Debug)]
pub struct MessageSysFlag;

impl MessageSysFlag {
    /// The body is compressed (with the algorithm in [`Self::COMPRESSION_TYPE_COMPARATOR`]).
    pub const COMPRESSED_FLAG: i32 = 0x1;
    /// The tags string holds several tags.
    pub const MULTI_TAGS_FLAG: i32 = 0x1 << 1;
    /// Not a transactional message.
    pub const TRANSACTION_NOT_TYPE: i32 = 0;
    /// Half (prepared) transactional message: not dispatched to a ConsumeQueue.
    pub const TRANSACTION_PREPARED_TYPE: i32 = 0x1 << 2;
    /// Committed transactional message.
    pub const TRANSACTION_COMMIT_TYPE: i32 = 0x2 << 2;
    /// Rolled-back transactional message: not dispatched, not indexed.
    pub const TRANSACTION_ROLLBACK_TYPE: i32 = 0x3 << 2;
    /// The born host is IPv6 (16 address bytes instead of 4).
    pub const BORNHOST_V6_FLAG: i32 = 0x1 << 4;
    /// The store host is IPv6 (16 address bytes instead of 4).
    pub const STOREHOSTADDRESS_V6_FLAG: i32 = 0x1 << 5;
    pub const NEED_UNWRAP_FLAG: i32 = 0x1 << 6;
    pub const INNER_BATCH_FLAG: i32 = 0x1 << 7;
    pub const COMPRESSION_LZ4_TYPE: i32 = 0x1 << 8;
    pub const COMPRESSION_ZSTD_TYPE: i32 = 0x2 << 8;
    pub const COMPRESSION_ZLIB_TYPE: i32 = 0x3 << 8;
    pub const COMPRESSION_TYPE_COMPARATOR: i32 = 0x7 << 8;

    /// The transaction bits (`TRANSACTION_*_TYPE`) of `flag`.
    pub fn transaction_value(flag: i32) -> i32 {
        flag & Self::TRANSACTION_ROLLBACK_TYPE
    }

    /// `flag` with its transaction bits replaced by `ty`.
    pub fn reset_transaction_value(flag: i32, ty: i32) -> i32 {
        (flag & !Self::TRANSACTION_ROLLBACK_TYPE) | ty
    }

    /// `flag` without [`Self::COMPRESSED_FLAG`].
    pub fn clear_compressed_flag(flag: i32) -> i32 {
        flag & !Self::COMPRESSED_FLAG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysflag_helpers() {
        let f = MessageSysFlag::reset_transaction_value(
            MessageSysFlag::COMPRESSED_FLAG | MessageSysFlag::TRANSACTION_PREPARED_TYPE,
            MessageSysFlag::TRANSACTION_COMMIT_TYPE,
        );
        assert_eq!(
            MessageSysFlag::transaction_value(f),
            MessageSysFlag::TRANSACTION_COMMIT_TYPE
        );
        assert_eq!(MessageSysFlag::clear_compressed_flag(f), 8);
    }
}
