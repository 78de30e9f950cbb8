//! The newest schema version this binary knows, per backend. Its own file: it names both
//! backends' migrators, and they import `schema` (for the downgrade check), so `schema`
//! cannot name them back.
use super::schema::known_version;
use super::{Backend, Store};

impl Store {
    /// The newest schema version this binary knows for `backend` (its last embedded
    /// migration).
    pub fn known_schema_version(backend: Backend) -> i64 {
        match backend {
            Backend::Sqlite => known_version(&super::sqlite::MIGRATOR),
            Backend::Postgres => known_version(&super::postgres::MIGRATOR),
        }
    }
}
