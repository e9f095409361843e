//! The domain's enums as column types: stored by their name (plain text, as they always were,
//! so no migration and no PostgreSQL enum type), read back typed. Implemented here, not derived
//! on the domain types, so `domain` depends on nothing of ours or sea-orm's.

use crate::domain::{DeliveryStatus, EndedReason, ProviderKind, ResourceIpStatus, Role, SessionStatus, Tier};
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
