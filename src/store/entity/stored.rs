//! The domain's enums as column types: stored by their name (plain text, as they always were,
//! so no migration and no PostgreSQL enum type), read back typed. Implemented here, not derived
//! on the domain types, so `domain` depends on nothing of ours or sea-orm's.

use crate::domain::{
    DeliveryStatus, EndedReason, ProviderConfig, ProviderKind, ResourceIpStatus, Role, SessionStatus, Tier,
};
use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, StringLen, ValueType, ValueTypeErr};
use sea_orm::{ActiveValue, ColIdx, DbErr, IntoActiveValue, QueryResult, TryGetError, TryGetable, Value};
use std::sync::Arc;

macro_rules! stored_by_name {
    ($($name:ident),+ $(,)?) => {$(
        impl From<$name> for Value {
            fn from(value: $name) -> Value {
                value.as_str().into()
            }
        }

        impl TryGetable for $name {
            fn try_get_by<I: ColIdx>(result: &QueryResult, index: I) -> Result<Self, TryGetError> {
                let name = String::try_get_by(result, index)?;
                name.parse().map_err(|err: crate::domain::UnknownVariant| {
                    TryGetError::DbErr(DbErr::TryIntoErr { from: "String", into: stringify!($name), source: Arc::new(err) })
                })
            }
        }

        impl ValueType for $name {
            fn try_from(value: Value) -> Result<Self, ValueTypeErr> {
                <String as ValueType>::try_from(value)?.parse().map_err(|_| ValueTypeErr)
            }

            fn type_name() -> String {
                stringify!($name).to_owned()
            }

            fn array_type() -> ArrayType {
                ArrayType::String
            }

            fn column_type() -> ColumnType {
                ColumnType::String(StringLen::None)
            }
        }

        impl Nullable for $name {
            fn null() -> Value {
                Value::String(None)
            }
        }

        impl IntoActiveValue<$name> for $name {
            fn into_active_value(self) -> ActiveValue<$name> {
                ActiveValue::Set(self)
            }
        }
    )+};
}

stored_by_name!(SessionStatus, ResourceIpStatus, EndedReason, Role, Tier, ProviderKind, DeliveryStatus);

/// A resource's provider settings, decoded from their stored JSON once, as the row is read. A
/// row that does not decode keeps why (one bad row never fails a listing, and its rules fail
/// with the reason); the text is kept as stored, so a compare-and-set sees exactly what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProvider {
    text: String,
    decoded: Result<ProviderConfig, Undecodable>,
}

/// Why stored provider settings do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Undecodable(String);

impl StoredProvider {
    pub fn new(config: &ProviderConfig) -> StoredProvider {
        // Plain data of strings, numbers and lists: serializing it cannot fail.
        let text = serde_json::to_string(config).unwrap_or_default();
        StoredProvider { text, decoded: Ok(config.clone()) }
    }

    /// Settings as stored, decoded (or why they do not decode).
    pub fn from_text(text: String) -> StoredProvider {
        let decoded = serde_json::from_str(&text).map_err(|err| Undecodable(err.to_string()));
        StoredProvider { text, decoded }
    }

    /// The decoded settings, or why the stored text does not decode.
    pub fn config(&self) -> Result<&ProviderConfig, &str> {
        self.decoded.as_ref().map_err(|why| why.0.as_str())
    }

    /// The settings as stored.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl From<StoredProvider> for Value {
    fn from(stored: StoredProvider) -> Value {
        stored.text.into()
    }
}

impl TryGetable for StoredProvider {
    fn try_get_by<I: ColIdx>(result: &QueryResult, index: I) -> Result<Self, TryGetError> {
        String::try_get_by(result, index).map(StoredProvider::from_text)
    }
}

impl ValueType for StoredProvider {
    fn try_from(value: Value) -> Result<Self, ValueTypeErr> {
        <String as ValueType>::try_from(value).map(StoredProvider::from_text)
    }

    fn type_name() -> String {
        "StoredProvider".to_owned()
    }

    fn array_type() -> ArrayType {
        ArrayType::String
    }

    fn column_type() -> ColumnType {
        ColumnType::Text
    }
}

impl Nullable for StoredProvider {
    fn null() -> Value {
        Value::String(None)
    }
}

impl IntoActiveValue<StoredProvider> for StoredProvider {
    fn into_active_value(self) -> ActiveValue<StoredProvider> {
        ActiveValue::Set(self)
    }
}
