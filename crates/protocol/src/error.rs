//! The protocol crate's one error type. Each variant says what went wrong with the bytes and, in
//! its doc, what a caller should do about it.

/// What can go wrong while decoding frames and messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame header declared a payload larger than the decoder's maximum. Checked before any
    /// allocation. The stream cannot be resynchronised: close the connection.
    #[error(
        "a frame declares {declared} bytes, above the limit of {max} bytes (is the peer an audiowire sender of the same version?)"
    )]
    FrameTooLong {
        /// The length the header declared.
        declared: u64,
        /// The decoder's maximum.
        max: u64,
    },
    /// The envelope's version byte is not one this build speaks. Close the connection, and
    /// upgrade whichever side is older.
    #[error("unsupported envelope version {0} (this build speaks version {v})", v = crate::message::ENVELOPE_VERSION)]
    UnknownVersion(u8),
    /// The message type tag is unknown. Close the connection, or skip the frame if the peer is
    /// known to be newer.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The payload ended before the message was complete. The frame is corrupt: close.
    #[error("{message} message truncated: {needed} more bytes needed for {field}")]
    Truncated {
        /// Which message was being decoded.
        message: &'static str,
        /// Which field did not fit.
        field: &'static str,
        /// How many more bytes it needed.
        needed: usize,
    },
    /// The payload had bytes left over after a complete message. The frame is corrupt: close.
    #[error("{message} message has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Which message was decoded.
        message: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A text field is not valid UTF-8.
    #[error("{message} message: field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which message was being decoded.
        message: &'static str,
        /// Which field.
        field: &'static str,
    },
    /// A field holds a value outside what the protocol allows (0 channels, 0 Hz, an unknown
    /// sample format code). The peer is broken or hostile: close.
    #[error("{message} message: invalid {field} {value} ({reason})")]
    InvalidValue {
        /// Which message was being decoded.
        message: &'static str,
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What the field must hold instead.
        reason: &'static str,
    },
    /// A value is too large to encode (a string over 65535 bytes).
    #[error("{field} is {len} bytes, too long to encode (at most {max})")]
    TooLongToEncode {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A Python `struct` format string is not valid. Fix the format string: the message names
    /// the character position (from 0) and what is wrong there.
    #[error("bad struct format {format:?} at position {position}: {reason}")]
    StructFormat {
        /// The format string.
        format: String,
        /// Character index (from 0) where the problem is.
        position: usize,
        /// What is wrong.
        reason: String,
    },
    /// A value does not fit its item of a `struct` format (wrong type, out of range, too long).
    /// Fix the value; nothing was packed.
    #[error(
        "struct value {index} ({value}) for '{code}' at position {position} of format {format:?}: {reason}"
    )]
    StructValue {
        /// The format string.
        format: String,
        /// Which value, counting from 1.
        index: usize,
        /// The value, as given.
        value: String,
        /// The item's type character.
        code: char,
        /// Character index (from 0) of the item in the format string.
        position: usize,
        /// Why it does not fit.
        reason: String,
    },
    /// A `struct` record was given the wrong number of values. Give one per item (one for each
    /// `s` or `p` string, none for `x` padding).
    #[error("struct format {format:?} takes {expected} values, got {got}")]
    StructValueCount {
        /// The format string.
        format: String,
        /// How many values the format takes.
        expected: usize,
        /// How many were given.
        got: usize,
    },
    /// Bytes to unpack are not exactly one record long. The peer uses another format (or the
    /// record was cut): check both sides use the same format string.
    #[error("a record of struct format {format:?} is {expected} bytes, got {got}")]
    StructRecordSize {
        /// The format string.
        format: String,
        /// The record size the format describes.
        expected: usize,
        /// The bytes given.
        got: usize,
    },
    /// A pre-shared key was empty. Give a key file with some content.
    #[error(
        "the key is empty: put a secret in the key file (e.g. `head -c 32 /dev/urandom > audiowire.key`)"
    )]
    EmptyKey,
    /// A sealed `Audio` frame failed authentication: forged, damaged, or sealed with another
    /// key. Drop it; on a byte stream, close.
    #[error("Audio #{sequence} failed authentication (a different key, or tampered with)")]
    Unauthentic {
        /// The frame's sequence number.
        sequence: u64,
    },
}

/// The protocol crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
