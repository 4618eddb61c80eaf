//! The RocketMQ message format, once for the whole workspace: what `remoting` puts on the wire,
//! what `store` writes to disk, and what `broker` and `client` filter and show all come from
//! here. It depends on no protocol or storage crate.
//!
//! - [`record`]: the stored-message record (layout table, [`encode_record`], [`parse_record`],
//!   [`StoredMessage`], magic codes, field positions);
//! - [`ext`]: [`Message`] (what a producer sends) and [`MessageExt`] (a stored message as a
//!   client sees it), built on the record codec;
//! - [`properties`]: the properties string codec and the property names ([`MessageConst`]);
//! - [`sys_flag`]: the system flag bits ([`MessageSysFlag`]);
//! - [`id`]: the broker's message id (`offsetMsgId`) and the client's unique id (`UNIQ_KEY`);
//! - [`tag`]: the tag hash stored in consume-queue units ([`tags_hash_code`]);
//! - [`group_topic`]: a consumer group's retry and dead-letter topic names;
//! - [`batch`]: the `SEND_BATCH_MESSAGE` body; [`compress`]: zlib body compression.
//!
//! Facts come from upstream's `MessageDecoder`, `MessageSysFlag`, `MessageConst` and
//! `MessageClientIDSetter` (Apache RocketMQ, develop branch).

pub mod batch;
pub mod compress;
pub mod error;
pub mod ext;
pub mod group_topic;
mod host;
pub mod id;
pub mod properties;
pub mod record;
pub mod sys_flag;
pub mod tag;

pub use batch::{decode_batch, encode_batch};
pub use compress::{compress_body, decompress_body, DEFAULT_COMPRESS_LEVEL, MAX_DECOMPRESSED_BODY};
pub use error::{MessageError, RecordError};
pub use ext::{Message, MessageExt};
pub use group_topic::{dlq_topic, retry_topic, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX};
pub use id::{create_message_id, decode_message_id, now_millis, UniqIdGenerator};
pub use properties::{
    decode_properties, encode_properties, find_property, MessageConst, Properties,
    NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR,
};
pub use record::{
    body_crc, encode_blank, encode_record, parse_record, pos, record_len, MessageInner, Parsed,
    RecordStamp, RecordView, StoredMessage, BLANK_MAGIC_CODE, END_FILE_MIN_BLANK_LENGTH,
    MAX_PROPERTIES_LENGTH, MAX_TOPIC_LENGTH, MESSAGE_MAGIC_CODE, MESSAGE_MAGIC_CODE_V2,
};
pub use sys_flag::MessageSysFlag;
pub use tag::{java_hash_code, tags_hash_code};
