//! The PostgreSQL store's schema: the migrations that create its tables (applied in order,
//! each once, under an advisory lock so nodes starting together do not race) and the store
//! format marker and id kept in its `kv` table. It must not read or write sopflow's data.

use postgres::Client;
use uuid::Uuid;

use super::layout::{self, Tree};
use super::postgres::{pg, tree_code};
use super::StoreError;

/// The schema versions this build knows, in order; each is applied once, in one
/// transaction with the row that records it. Never edit one that shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the key-value table every tree lives in. `bytea` compares byte by byte, as sled
    // does, so range scans see keys in the layout's order.
    "CREATE TABLE kv (
        tree  smallint NOT NULL,
        key   bytea    NOT NULL,
        value bytea    NOT NULL,
        PRIMARY KEY (tree, key)
    )",
    // 2: leases on instances with due timers, so two nodes never fire one timer
    // (`pg_commit.rs`).
    "CREATE TABLE timer_claims (
        instance bytea       PRIMARY KEY,
        node     text        NOT NULL,
        until    timestamptz NOT NULL
    )",
    // 3: leases on work one node of several does at a time (the outbox's sending), so two
    // nodes never send the same pending messages side by side (`pg_commit.rs`).
    "CREATE TABLE leases (
        name  text        PRIMARY KEY,
        node  text        NOT NULL,
        until timestamptz NOT NULL
    )",
];

/// Creates the schema and applies the migrations it lacks, under an advisory lock so two
/// nodes starting at once do not both apply one.
pub(super) fn migrate(c: &mut Client, upgrading: bool) -> Result<u32, StoreError> {
    let schema = current_schema(c)?;
    let mut tx = c.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock(7271003)", &[])
        .map_err(pg)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.sopflow_schema (version integer NOT NULL)"
    ))
    .map_err(pg)?;
    let row = tx
        .query_opt("SELECT max(version) FROM sopflow_schema", &[])
        .map_err(pg)?;
    let have: i32 = row.and_then(|r| r.get::<_, Option<i32>>(0)).unwrap_or(0);
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if have > known {
        return Err(StoreError::Corrupt(format!(
            "the database's sopflow schema is version {have}, newer than this build's {known}: \
             run the newer sopflow, or copy the data out with it"
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(have).unwrap_or(0))
    {
        tx.batch_execute(sql).map_err(pg)?;
        let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("INSERT INTO sopflow_schema (version) VALUES ($1)", &[&v])
            .map_err(pg)?;
    }
    // The format marker and the store's id, as sled and memory keep them.
    let meta = tree_code(Tree::Meta);
    let format = match tx
        .query_opt(
            "SELECT value FROM kv WHERE tree = $1 AND key = $2",
            &[&meta, &layout::FORMAT_KEY],
        )
        .map_err(pg)?
    {
        Some(r) => layout::check_format(r.get::<_, &[u8]>(0), "the PostgreSQL store", upgrading)?,
        None => {
            tx.execute(
                "INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3), ($1, $4, $5)",
                &[
                    &meta,
                    &layout::FORMAT_KEY,
                    &&layout::format_value()[..],
                    &layout::STORE_ID_KEY,
                    &Uuid::now_v7().to_string().as_bytes(),
                ],
            )
            .map_err(pg)?;
            layout::FORMAT_VERSION
        }
    };
    tx.commit().map_err(pg)?;
    Ok(format)
}

fn current_schema(c: &mut Client) -> Result<String, StoreError> {
    let r = c.query_one("SHOW search_path", &[]).map_err(pg)?;
    let path: String = r.get(0);
    Ok(path
        .split(',')
        .next()
        .unwrap_or("public")
        .trim()
        .to_string())
}
