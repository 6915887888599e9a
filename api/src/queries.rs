//! The API's own statements: lists with any combination of filters, built from fixed SQL pieces
//! and numbered parameters (never from request text). `tests/query_plans.rs` checks that the
//! common ones use the sink's indexes on a large table.

use tokio_postgres::types::ToSql;

use crate::error::ApiError;
use crate::input::{self, AddressFilter, Page};

/// Counts stop here: past it a list reports `total_capped` instead of scanning everything.
pub const COUNT_CAP: i64 = 10_000;

/// A `WHERE` clause under construction with its parameters.
#[derive(Default)]
pub struct Conditions {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Conditions {
    /// Adds `sql`, in which `$?` stands for the parameter `value`.
    pub fn push(&mut self, sql: &str, value: impl ToSql + Sync + Send + 'static) {
        self.params.push(Box::new(value));
        self.clauses
            .push(sql.replace("$?", &format!("${}", self.params.len())));
    }

    /// `column = address` or `column <<= network`.
    pub fn push_address(&mut self, column: &str, filter: AddressFilter) {
        match filter {
            AddressFilter::Address(ip) => self.push(&format!("{column} = $?"), ip),
            AddressFilter::Network(net) => {
                // A network is matched as the range of its addresses, which a btree index serves.
                self.push(&format!("{column} >= $?::inet"), net.network());
                self.push(&format!("{column} <= $?::inet"), net.broadcast());
            }
        }
    }

    /// `column >= from` and `column < to` for the RFC 3339 times given, refusing a range that
    /// ends before it starts.
    pub fn push_time_range(
        &mut self,
        column: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<(), ApiError> {
        let from = input::parse_opt_time("from", from)?;
        let to = input::parse_opt_time("to", to)?;
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                return Err(ApiError::invalid("from", "from is after to"));
            }
        }
        if let Some(from) = from {
            self.push(&format!("{column} >= $?"), from);
        }
        if let Some(to) = to {
            self.push(&format!("{column} < $?"), to);
        }
        Ok(())
    }

    pub fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The parameters, then `extra` ones numbered after them.
    pub fn params<'a>(&'a self, extra: &[&'a (dyn ToSql + Sync)]) -> Vec<&'a (dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .chain(extra.iter().copied())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

/// `SELECT <columns> FROM <table> <where> ORDER BY <order> LIMIT $n OFFSET $n+1`.
pub fn page_sql(columns: &str, table: &str, conditions: &Conditions, order: &str) -> String {
    let n = conditions.len();
    format!(
        "SELECT {columns} FROM {table}{} ORDER BY {order} LIMIT ${} OFFSET ${}",
        conditions.where_sql(),
        n + 1,
        n + 2
    )
}

/// How many rows match, counted up to [`COUNT_CAP`] + 1.
pub fn capped_count_sql(table: &str, conditions: &Conditions) -> String {
    format!(
        "SELECT count(*) FROM (SELECT 1 FROM {table}{} LIMIT {}) matching",
        conditions.where_sql(),
        COUNT_CAP + 1
    )
}

/// One page of `table` in `order` and how many rows match (capped).
pub async fn fetch_page(
    client: &deadpool_postgres::Client,
    columns: &str,
    table: &str,
    conditions: &Conditions,
    order: &str,
    page: Page,
) -> Result<(Vec<tokio_postgres::Row>, i64), tokio_postgres::Error> {
    let sql = page_sql(columns, table, conditions, order);
    let rows = client
        .query(&sql, &conditions.params(&[&page.limit, &page.offset]))
        .await?;
    let counted = client
        .query_one(
            &capped_count_sql(table, conditions),
            &conditions.params(&[]),
        )
        .await?
        .get(0);
    Ok((rows, counted))
}

/// A session in a list (`routes::sessions::SessionItem`), in this order.
pub const SESSION_ITEM_COLUMNS: &str =
    "id, host(client_ip), host(server_ip), client_port, server_port, \
     coalesce(start_time, created_at, now()), end_time, coalesce(status, 'active'), \
     coalesce(data_transferred, 0)::float8, coalesce(risk_score, 0)::float8, \
     coalesce(anomaly_score, 0)::float8, auth_method, auth_result, agent_id, client_country";

/// The rest of a session's detail (`routes::sessions::SessionDetail`), in this order.
pub const SESSION_DETAIL_COLUMNS: &str = "coalesce(packets_sent, 0), coalesce(packets_received, 0), \
     coalesce(screenshots_count, 0), coalesce(clipboard_operations, 0), coalesce(file_operations, 0), \
     user_agent, client_version, server_version, security_type, failure_reason, desktop_name, width, height, \
     encrypted, partial, bytes_c2s, bytes_s2c, key_events, pointer_events, client_cut_text_count, \
     server_cut_text_count, end_reason, model_version, scored_at, risk_components, risk_reasons, features, \
     client_country, client_city, client_latitude, client_longitude, client_asn, client_as_org, \
     client_address_class, server_country, distance_km, reputation";

/// A threat (`routes::threats::ThreatItem`), in this order.
pub const THREAT_COLUMNS: &str = "id, session_id, threat_type, severity, description, host(source_ip), \
     host(target_ip), target_port, action_taken, ml_confidence::float8, risk_score::float8, model_version, \
     coalesce(timestamp, created_at), coalesce(metadata, '{}'::jsonb), status, close_reason, assignee, notes, \
     created_at, updated_at";

/// One session with its detail columns, over the sink's statement. `$1` id.
pub fn session_detail_sql() -> String {
    format!(
        "SELECT {SESSION_ITEM_COLUMNS}, {SESSION_DETAIL_COLUMNS} FROM ({}) s",
        sink::queries::SESSION_BY_ID
    )
}

/// The threats of one session, over the sink's statement. `$1` session id.
pub fn threats_of_session_sql() -> String {
    format!(
        "SELECT {THREAT_COLUMNS} FROM ({}) t",
        sink::queries::THREATS_OF_SESSION
    )
}

/// Firewall rules in force: blocks and quarantines neither revoked nor expired.
pub const ACTIVE_RULES: &str = "SELECT decision_id, action, origin, scope, value, created_at, until, \
     greatest(0, extract(epoch FROM until - now()))::bigint, reason, threat_id, created_by, dry_run \
     FROM decisions WHERE revoked_at IS NULL AND until > now() AND action IN ('block', 'quarantine') \
     ORDER BY until DESC LIMIT $1 OFFSET $2";

pub const ACTIVE_RULES_COUNT: &str =
    "SELECT count(*) FROM decisions WHERE revoked_at IS NULL AND until > now() AND action IN ('block', 'quarantine')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_number_their_parameters() {
        let mut conditions = Conditions::default();
        conditions.push("status = $?", "active".to_string());
        conditions.push_address(
            "client_ip",
            crate::input::parse_address_filter("ip", "10.0.0.0/8").unwrap(),
        );
        let sql = page_sql("id", "vnc_sessions", &conditions, "start_time DESC");
        assert_eq!(
            sql,
            "SELECT id FROM vnc_sessions WHERE status = $1 AND client_ip >= $2::inet AND client_ip <= $3::inet \
             ORDER BY start_time DESC LIMIT $4 OFFSET $5"
        );
    }
}
