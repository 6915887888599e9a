//! Avro single-object encoding of the event types.

use serde::{de::DeserializeOwned, Serialize};
use serde_avro_fast::ser::SerializerConfig;

use crate::registry::registry;

/// A record type that crosses a topic.
pub trait Event: Serialize + DeserializeOwned {
    /// Full Avro name of the record's schema in [`crate::registry`].
    const SCHEMA_NAME: &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is {0} bytes, shorter than the 10-byte single-object header")]
    TooShort(usize),
    #[error("record does not start with the Avro single-object marker C3 01")]
    BadMarker,
    #[error("writer schema fingerprint {fingerprint} is not a known version of {schema}")]
    UnknownFingerprint {
        schema: &'static str,
        fingerprint: String,
    },
    #[error("no schema registered for {0}")]
    UnknownSchema(&'static str),
    #[error("cannot encode {schema}: {source}")]
    Encode {
        schema: &'static str,
        source: serde_avro_fast::ser::SerError,
    },
    #[error("cannot decode {schema} v{version}: {source}")]
    Decode {
        schema: &'static str,
        version: u32,
        source: serde_avro_fast::de::DeError,
    },
}

/// Encodes `value` with the current version of its schema.
pub fn encode<T: Event>(value: &T) -> Result<Vec<u8>, CodecError> {
    let version = registry()
        .current(T::SCHEMA_NAME)
        .ok_or(CodecError::UnknownSchema(T::SCHEMA_NAME))?;
    let mut config = SerializerConfig::new(&version.schema);
    serde_avro_fast::to_single_object_vec(value, &mut config).map_err(|source| CodecError::Encode {
        schema: T::SCHEMA_NAME,
        source,
    })
}

/// Decodes a single-object record written with any known version of `T`'s schema.
pub fn decode<T: Event>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() < 10 {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes[..2] != [0xC3, 0x01] {
        return Err(CodecError::BadMarker);
    }
    let fingerprint = &bytes[2..10];
    let writer = registry()
        .versions(T::SCHEMA_NAME)
        .find(|v| v.fingerprint() == fingerprint)
        .ok_or_else(|| CodecError::UnknownFingerprint {
            schema: T::SCHEMA_NAME,
            fingerprint: fingerprint.iter().map(|b| format!("{b:02x}")).collect(),
        })?;
    serde_avro_fast::from_datum_slice(&bytes[10..], &writer.schema).map_err(|source| {
        CodecError::Decode {
            schema: T::SCHEMA_NAME,
            version: writer.version,
            source,
        }
    })
}
