//! Databases for the store tests: SQLite in a temporary directory, and the local
//! PostgreSQL (JOTA_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test) in a
//! schema of its own per test, dropped afterwards.
#![allow(dead_code)] // each test binary uses a different subset

use sqlx::Connection;

/// A SQLite URL in `dir`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("jota.db").display())
}

/// A schema of its own on the local PostgreSQL; dropped with it.
pub struct PgSchema {
    admin: sqlx::PgConnection,
    schema: String,
    /// URL whose connections use the schema.
    pub url: String,
}

impl PgSchema {
    /// Creates the schema.
    pub async fn new() -> PgSchema {
        let base = std::env::var("JOTA_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("jota_test_{}", jota_server::random_hex(6).unwrap());
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .expect("PostgreSQL at JOTA_TEST_POSTGRES (CI has one on 127.0.0.1:5432)");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        PgSchema { admin, schema, url }
    }

    /// Drops the schema.
    pub async fn drop(mut self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut self.admin)
            .await
            .unwrap();
    }
}

/// A jota artifact record for store tests (no file behind it).
pub fn artifact(id: &str, version: &str, created: i64) -> jota_server::store::ArtifactRow {
    jota_server::store::ArtifactRow {
        id: id.into(),
        kind: "jota".into(),
        version: version.into(),
        size: 1000,
        sha256: "ab".repeat(32),
        sha1: String::new(),
        md5: String::new(),
        manifest_sha256: "cd".repeat(32),
        chunked_bytes: 100,
        created,
    }
}
