//! `GET /v1/decisions/stream`: the CrowdSec Local API decision stream, so CrowdSec's bouncers
//! (firewall, nginx, HAProxy, Cloudflare, ...) enforce vncguard's blocks. Same shapes and
//! semantics as CrowdSec's LAPI (`pkg/apiserver/controllers/v1/decisions.go`): with
//! `startup=true` every ban in force is `new` and the bans that ended in the last days are
//! `deleted`; every later poll answers what changed since this bouncer's previous one.
//!
//! What a bouncer receives: enforced (not dry-run) `block` decisions of scope ip (`Ip`) or cidr
//! (`Range`), as `type: "ban"`, one per address or network (the one in force longest, as
//! CrowdSec's deduplication does), its remaining `duration` in Go's notation (`3h59m58s`),
//! `origin` (`automatic` or `analyst`), `scenario` (`vncguard/<threat rule>`, or
//! `vncguard/manual` for an analyst's block without a threat), `id` (a number) and `uuid` (the
//! decision id). An address is `deleted` only once no decision the bouncer would see still bans
//! it, so an expired short ban never lifts a longer one.
//!
//! "Since the previous poll" is exact whatever the clocks and however late a writer commits: a
//! decision row records the transaction that last wrote it (`changed_xid`: its insert, or the
//! unblock that revoked it), and a poll remembers its snapshot (which transactions it saw). The
//! next poll takes every row written by a transaction the previous snapshot did not see, and
//! every expiry between the two polls' database times: nothing missed, nothing twice.

use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::IsolationLevel;
use utoipa::{IntoParams, ToSchema};

use crate::bouncers::Bouncer;
use crate::error::{ApiError, ApiResult};
use crate::input::Query;
use crate::AppState;

/// How far back `startup=true` lists ended bans as `deleted`: CrowdSec's default database flush
/// (`flush.max_age: 7d`), past which its LAPI no longer has them to list either. A bouncer
/// restarting over an old set (set-only mode) clears what ended within it.
const STARTUP_DELETED_DAYS: i32 = 7;

/// Most decisions in one list of one answer. Bans in force are bounded by the attacks seen, not
/// by polls; 100,000 (some 20 MB of JSON) is far past any real ban list and keeps one poll's
/// memory bounded. Past it the oldest are sent, the rest are counted as truncated and logged.
const STREAM_LIMIT: i64 = 100_000;

/// The query parameters CrowdSec's bouncers send (`go-cs-bouncer`'s `DecisionsStreamOpts`).
/// Any other is refused with 400 rather than silently ignored.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// `true` on a bouncer's first poll: every ban in force, not only what changed.
    pub startup: Option<String>,
    /// Comma-separated scopes, `ip` and `range` (case-insensitive; the default is both).
    pub scopes: Option<String>,
    /// Comma-separated origins to keep: `automatic`, `analyst`.
    pub origins: Option<String>,
    /// Comma-separated texts; only scenarios containing one of them (case-insensitive).
    pub scenarios_containing: Option<String>,
    /// Comma-separated texts; no scenario containing any of them (case-insensitive).
    pub scenarios_not_containing: Option<String>,
    /// Sent by newer bouncers for CrowdSec's community blocklist; vncguard has none (accepted, no effect).
    pub community_pull: Option<String>,
    /// Sent by newer bouncers for CrowdSec's subscribed lists; vncguard has none (accepted, no effect).
    pub additional_pull: Option<String>,
}

/// One decision as CrowdSec's `models.Decision`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamDecision {
    pub id: i64,
    /// vncguard's decision id.
    pub uuid: String,
    /// `automatic` or `analyst`.
    pub origin: String,
    /// `vncguard/<threat rule>`, or `vncguard/manual`.
    pub scenario: String,
    /// `Ip` or `Range`.
    pub scope: String,
    /// The address, or the network in CIDR notation.
    pub value: String,
    /// Always `ban`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Time left in Go's notation (`3h59m58s`); negative for a deleted decision.
    pub duration: String,
}

/// CrowdSec's `models.DecisionsStreamResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionStream {
    pub new: Vec<StreamDecision>,
    pub deleted: Vec<StreamDecision>,
}

/// An error as CrowdSec's LAPI answers one. Its clients read `message` (`go-cs-bouncer` 0.0.25
/// dereferences it unchecked and crashes on a body without it), so every answer under `/v1`
/// that is not a success has this shape, with the status and `Retry-After` of the error.
#[derive(Debug, Serialize, ToSchema)]
pub struct CrowdsecErrorBody {
    pub message: String,
}

/// `error` in CrowdSec's shape.
pub fn crowdsec_error(error: ApiError) -> Response {
    let mut response = (
        error.status,
        axum::Json(CrowdsecErrorBody {
            message: error.message,
        }),
    )
        .into_response();
    if let Some(seconds) = error.retry_after {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(seconds),
        );
    }
    response
}

/// The filters of a poll, as the statements' parameters.
#[derive(Debug, PartialEq)]
struct Filters {
    startup: bool,
    /// `decisions.scope` values: `ip`, `cidr`.
    scopes: Vec<String>,
    origins: Option<Vec<String>>,
    containing: Option<Vec<String>>,
    not_containing: Option<Vec<String>>,
}

fn parse_bool(field: &str, value: Option<&str>) -> ApiResult<bool> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::invalid(field, "expected true or false")),
    }
}

/// The non-empty items of a comma-separated list, lowercased when `lower`; None when none.
fn list(value: Option<&str>, lower: bool) -> Option<Vec<String>> {
    let items: Vec<String> = value?
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            if lower {
                item.to_lowercase()
            } else {
                item.to_string()
            }
        })
        .collect();
    (!items.is_empty()).then_some(items)
}

impl StreamParams {
    fn filters(&self) -> ApiResult<Filters> {
        parse_bool("community_pull", self.community_pull.as_deref())?;
        parse_bool("additional_pull", self.additional_pull.as_deref())?;
        // Scopes vncguard never decides on (country, as, username) match nothing, as in CrowdSec.
        let scopes = list(self.scopes.as_deref(), true)
            .unwrap_or_else(|| vec!["ip".into(), "range".into()])
            .into_iter()
            .filter_map(|scope| match scope.as_str() {
                "ip" => Some("ip".to_string()),
                "range" => Some("cidr".to_string()),
                _ => None,
            })
            .collect();
        Ok(Filters {
            startup: parse_bool("startup", self.startup.as_deref())?,
            scopes,
            origins: list(self.origins.as_deref(), false),
            containing: list(self.scenarios_containing.as_deref(), true),
            not_containing: list(self.scenarios_not_containing.as_deref(), true),
        })
    }
}

/// `seconds` in Go's `time.Duration` notation, which bouncers parse with `time.ParseDuration`:
/// `0s`, `59s`, `1m0s`, `3h59m58s`, `-5s`.
pub fn go_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let total = seconds.unsigned_abs();
    let (hours, minutes, secs) = (total / 3600, total % 3600 / 60, total % 60);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{secs}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{secs}s")
    } else {
        format!("{sign}{secs}s")
    }
}

/// The bans a bouncer may see, with its filters: `$1` now, `$2` scopes, `$3` origins, `$4`
/// scenario texts one must contain, `$5` texts none may contain. `active` are those in force.
/// NOT MATERIALIZED keeps each use of them on the indexes of `decisions`.
const BANS: &str = "bans AS NOT MATERIALIZED (
    SELECT d.stream_id, d.decision_id, d.scope, d.value, d.origin, d.until, d.revoked_at, d.changed_xid,
           coalesce('vncguard/' || t.threat_type,
                    'vncguard/' || substring(d.created_by FROM '^policy:(.+)$'),
                    'vncguard/manual') AS scenario
    FROM decisions d LEFT JOIN threat_logs t ON t.id = d.threat_id
    WHERE d.action = 'block' AND NOT d.dry_run AND d.value_cidr IS NOT NULL
      AND d.scope = ANY($2::text[])
      AND ($3::text[] IS NULL OR d.origin = ANY($3::text[]))
), seen AS NOT MATERIALIZED (
    SELECT * FROM bans
    WHERE ($4::text[] IS NULL OR EXISTS (SELECT 1 FROM unnest($4::text[]) c WHERE strpos(lower(scenario), c) > 0))
      AND ($5::text[] IS NULL OR NOT EXISTS (SELECT 1 FROM unnest($5::text[]) c WHERE strpos(lower(scenario), c) > 0))
), active AS NOT MATERIALIZED (
    SELECT * FROM seen WHERE revoked_at IS NULL AND until > $1
)";

/// What both lists select, in [`StreamDecision`]'s order.
const STREAM_COLUMNS: &str = "stream_id, decision_id, origin, scenario, scope, value, \
     ceil(extract(epoch FROM until_or_end - $1))::bigint";

/// Rows written by a transaction the previous poll's snapshot `$6` did not see (the xmin test
/// first, for the index on `changed_xid`).
const WRITTEN_SINCE: &str = "(changed_xid >= pg_snapshot_xmin($6::text::pg_snapshot) \
     AND NOT pg_visible_in_snapshot(changed_xid, $6::text::pg_snapshot))";

/// The longest ban in force per address or network; `$6` the previous poll's snapshot keeps
/// only those written since (None: all). `$7` limit.
fn new_sql() -> String {
    format!(
        "WITH {BANS}, longest AS (
             SELECT DISTINCT ON (scope, value) *, until AS until_or_end FROM active
             ORDER BY scope, value, until DESC, stream_id DESC)
         SELECT {STREAM_COLUMNS} FROM longest
         WHERE $6::text IS NULL OR {WRITTEN_SINCE}
         ORDER BY stream_id LIMIT $7"
    )
}

/// Per address or network that no ban in force covers any more, the ban that ended last of
/// those that ended after `$8` (expired, or unblocked), or were written since the previous
/// poll's snapshot `$6`. `$7` limit.
fn deleted_sql() -> String {
    format!(
        "WITH {BANS}, ended AS (
             SELECT *, least(until, coalesce(revoked_at, until)) AS until_or_end FROM seen s
             WHERE ((revoked_at IS NULL AND until > $8 AND until <= $1)
                    OR revoked_at > $8
                    OR ($6::text IS NOT NULL AND {WRITTEN_SINCE}
                        AND (revoked_at IS NOT NULL OR until <= $1)))
               AND NOT EXISTS (SELECT 1 FROM active a WHERE a.scope = s.scope AND a.value = s.value)),
         latest AS (
             SELECT DISTINCT ON (scope, value) * FROM ended
             ORDER BY scope, value, until_or_end DESC, stream_id DESC)
         SELECT {STREAM_COLUMNS} FROM latest ORDER BY stream_id LIMIT $7"
    )
}

fn decision_of(row: &tokio_postgres::Row) -> StreamDecision {
    let scope: &str = row.get(4);
    StreamDecision {
        id: row.get(0),
        uuid: row.get(1),
        origin: row.get(2),
        scenario: row.get(3),
        scope: if scope == "cidr" { "Range" } else { "Ip" }.into(),
        value: row.get(5),
        kind: "ban".into(),
        duration: go_duration(row.get(6)),
    }
}

/// Counts and logs a list cut at [`STREAM_LIMIT`].
fn note_truncation(bouncer: &Bouncer, list: &'static str, len: usize) {
    if len as i64 >= STREAM_LIMIT {
        telemetry::counter(
            "vncguard_api_bouncer_stream_truncated_total",
            "Decision stream answers cut at their size limit",
            &[("list", list)],
        )
        .inc();
        tracing::warn!(bouncer = %bouncer.name, list, limit = STREAM_LIMIT, "decision stream list truncated");
    }
}

#[utoipa::path(get, path = "/v1/decisions/stream", tag = "crowdsec", security(("bouncer_key" = [])), params(StreamParams),
    description = "CrowdSec Local API decision stream for CrowdSec bouncers, authenticated by a bouncer key (`X-Api-Key`, from `POST /api/bouncers`). `startup=true` answers every ban in force; later polls what changed since the bouncer's previous one.",
    responses((status = 200, body = DecisionStream), (status = 400, body = CrowdsecErrorBody), (status = 403, body = CrowdsecErrorBody), (status = 429, body = CrowdsecErrorBody), (status = 503, body = CrowdsecErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    method: Method,
    bouncer: Result<Bouncer, ApiError>,
    params: Result<Query<StreamParams>, ApiError>,
) -> Response {
    // The key is checked before the parameters, as CrowdSec's middleware does.
    let answer = match (bouncer, params) {
        (Err(refused), _) => Err(refused),
        (Ok(bouncer), Ok(Query(params))) => answer(&state, &method, &bouncer, &params).await,
        (Ok(_), Err(invalid)) => Err(invalid),
    };
    answer.unwrap_or_else(crowdsec_error)
}

async fn answer(
    state: &AppState,
    method: &Method,
    bouncer: &Bouncer,
    params: &StreamParams,
) -> ApiResult<Response> {
    let filters = params.filters()?;
    // A HEAD checks the key and the connection; it moves nothing on (as in CrowdSec).
    if method == Method::HEAD {
        return Ok(().into_response());
    }
    let mut db = state.pool.get().await?;
    let tx = db
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The first statement takes the snapshot every later one reads.
    let row = tx
        .query_one("SELECT now(), pg_current_snapshot()::text", &[])
        .await?;
    let (now, snapshot): (DateTime<Utc>, String) = (row.get(0), row.get(1));
    let since = bouncer.last_pull.as_ref().filter(|_| !filters.startup);
    let since_snapshot = since.map(|(_, snapshot)| snapshot.clone());
    let ended_after = match since {
        Some((at, _)) => *at,
        None => now - chrono::Duration::days(STARTUP_DELETED_DAYS.into()),
    };
    let common: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &now,
        &filters.scopes,
        &filters.origins,
        &filters.containing,
        &filters.not_containing,
        &since_snapshot,
        &STREAM_LIMIT,
    ];
    let new = tx.query(&new_sql(), &common).await?;
    let mut with_after = common.to_vec();
    with_after.push(&ended_after);
    let deleted = tx.query(&deleted_sql(), &with_after).await?;
    tx.commit().await?;
    note_truncation(bouncer, "new", new.len());
    note_truncation(bouncer, "deleted", deleted.len());
    let updated = db
        .execute(
            "UPDATE bouncers SET last_pull = $2, last_snapshot = $3::text::pg_snapshot, pulls = pulls + 1,
                                 last_ip = $4, user_agent = coalesce($5, user_agent)
             WHERE id = $1",
            &[
                &bouncer.id,
                &now,
                &snapshot,
                &bouncer.client_ip,
                &bouncer.user_agent,
            ],
        )
        .await?;
    if updated == 0 {
        // Revoked while this poll read.
        return Err(ApiError::forbidden(
            "access forbidden: this key was revoked",
        ));
    }
    let answer = DecisionStream {
        new: new.iter().map(decision_of).collect(),
        deleted: deleted.iter().map(decision_of).collect(),
    };
    tracing::debug!(bouncer = %bouncer.name, new = answer.new.len(), deleted = answer.deleted.len(), startup = filters.startup, "decision stream");
    Ok(axum::Json(answer).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m0s"),
            (3599, "59m59s"),
            (3600, "1h0m0s"),
            (14_398, "3h59m58s"),
            (90_061, "25h1m1s"),
            (-5, "-5s"),
            (-62, "-1m2s"),
        ] {
            assert_eq!(go_duration(secs), text);
        }
    }

    #[test]
    fn parameters_become_filters() {
        let params = StreamParams {
            startup: Some("true".into()),
            scopes: Some("Ip, RANGE,country".into()),
            origins: Some("analyst".into()),
            scenarios_containing: Some("Brute,".into()),
            scenarios_not_containing: None,
            community_pull: Some("false".into()),
            additional_pull: None,
        };
        assert_eq!(
            params.filters().unwrap(),
            Filters {
                startup: true,
                scopes: vec!["ip".into(), "cidr".into()],
                origins: Some(vec!["analyst".into()]),
                containing: Some(vec!["brute".into()]),
                not_containing: None,
            }
        );
        let defaults = StreamParams::default().filters().unwrap();
        assert_eq!(defaults.scopes, vec!["ip".to_string(), "cidr".into()]);
        assert!(!defaults.startup);
        let bad = StreamParams {
            startup: Some("yes".into()),
            ..StreamParams::default()
        };
        assert_eq!(bad.filters().unwrap_err().field.as_deref(), Some("startup"));
    }
}
