//! Request input: JSON bodies and query strings whose rejections answer in the API's error
//! shape, and the parsers that validate each kind of field and name it when they refuse it.

use std::net::IpAddr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// `axum::Json` with the API's error shape: a body that is not JSON is a 400, one whose fields
/// do not fit the type is a 422 naming the field serde complained about.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::JsonRejection;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(JsonRejection::JsonDataError(e)) => {
                let detail = e.body_text();
                let field = field_of(&detail).to_string();
                Err(ApiError::unprocessable(&field, detail))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            )),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => Err(
                ApiError::new(e.status(), "payload_too_large", e.body_text()),
            ),
            Err(e) => Err(ApiError::invalid("body", e.body_text())),
        }
    }
}

/// The field serde names in `missing field `x`` / `unknown field `x`` / `x: invalid ...`.
fn field_of(detail: &str) -> &str {
    if let Some(start) = detail.find('`') {
        if let Some(len) = detail[start + 1..].find('`') {
            return &detail[start + 1..start + 1 + len];
        }
    }
    detail
        .split_once(": ")
        .and_then(|(_, rest)| rest.split_once(": "))
        .map(|(field, _)| field)
        .filter(|field| !field.contains(' '))
        .unwrap_or("body")
}

/// `axum::extract::Query` with the API's error shape.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }
}

/// Most rows one list answers.
pub const MAX_LIMIT: i64 = 1000;

/// `limit` with `offset` or `page`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Rows per page, 1..=1000 (default 100).
    pub limit: Option<String>,
    /// Rows to skip (default 0); `page` is the alternative.
    pub offset: Option<String>,
    /// Page number from 1, of `limit` rows.
    pub page: Option<String>,
}

/// A validated page: `limit` rows after `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    /// The 1-based page this offset falls on.
    pub fn number(&self) -> i64 {
        self.offset / self.limit + 1
    }
}

impl PageParams {
    pub fn page(&self, default_limit: i64) -> Result<Page, ApiError> {
        let limit =
            parse_opt_int("limit", self.limit.as_deref(), 1, MAX_LIMIT)?.unwrap_or(default_limit);
        let offset = match (
            parse_opt_int("offset", self.offset.as_deref(), 0, i64::MAX / 2)?,
            parse_opt_int("page", self.page.as_deref(), 1, 1_000_000)?,
        ) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("page", "give offset or page, not both"))
            }
            (Some(offset), None) => offset,
            (None, Some(page)) => (page - 1) * limit,
            (None, None) => 0,
        };
        Ok(Page { limit, offset })
    }
}

/// An integer within `min..=max`, if present.
pub fn parse_opt_int(
    field: &str,
    value: Option<&str>,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ApiError> {
    value
        .map(|text| {
            text.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(field, format!("expected an integer in {min}..={max}"))
                })
        })
        .transpose()
}

/// A finite number within `min..=max`, if present.
pub fn parse_opt_f64(
    field: &str,
    value: Option<&str>,
    min: f64,
    max: f64,
) -> Result<Option<f64>, ApiError> {
    value
        .map(|text| {
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(field, format!("expected a number in {min}..={max}"))
                })
        })
        .transpose()
}

/// An RFC 3339 time (`2024-01-15T10:30:00Z`), if present.
pub fn parse_opt_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::invalid(
                        field,
                        "expected an RFC 3339 time such as 2024-01-15T10:30:00Z",
                    )
                })
        })
        .transpose()
}

/// An address (`203.0.113.10`) or a network (`203.0.113.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFilter {
    Address(IpAddr),
    Network(IpNet),
}

pub fn parse_address_filter(field: &str, text: &str) -> Result<AddressFilter, ApiError> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(AddressFilter::Address(ip));
    }
    text.parse::<IpNet>()
        .map(|net| AddressFilter::Network(net.trunc()))
        .map_err(|_| ApiError::invalid(field, "expected an IP address or a CIDR network"))
}

/// One of `allowed`, if present.
pub fn parse_opt_enum<'a>(
    field: &str,
    value: Option<&'a str>,
    allowed: &[&str],
) -> Result<Option<&'a str>, ApiError> {
    value
        .map(|text| {
            if allowed.contains(&text) {
                Ok(text)
            } else {
                Err(ApiError::invalid(
                    field,
                    format!("expected one of {}", allowed.join(", ")),
                ))
            }
        })
        .transpose()
}

/// A duration such as `90`, `30m`, `24h` or `7d`, within one second and a year.
pub fn parse_duration_secs(field: &str, text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|secs| (1..=366 * 86_400).contains(secs))
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                "expected a duration from 1s to 366d, such as 3600, 30m, 24h or 7d",
            )
        })
}

/// A required text of 1..=`max` characters after trimming.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let text = value.trim();
    if text.is_empty() || text.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("expected 1 to {max} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::invalid(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_refuse_nonsense() {
        assert_eq!(parse_duration_secs("d", "24h").unwrap(), 86_400);
        assert_eq!(parse_duration_secs("d", "90").unwrap(), 90);
        assert_eq!(parse_duration_secs("d", "30m").unwrap(), 1800);
        for bad in ["", "0", "h", "5y", "-3h", "999999999999999999d", "367d"] {
            assert!(parse_duration_secs("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_come_from_offset_or_page() {
        let params = |limit: &str, offset: Option<&str>, page: Option<&str>| PageParams {
            limit: Some(limit.into()),
            offset: offset.map(Into::into),
            page: page.map(Into::into),
        };
        assert_eq!(
            params("50", None, Some("3")).page(100).unwrap(),
            Page {
                limit: 50,
                offset: 100
            }
        );
        assert_eq!(params("50", Some("7"), None).page(100).unwrap().number(), 1);
        assert_eq!(
            params("1001", None, None)
                .page(100)
                .unwrap_err()
                .field
                .as_deref(),
            Some("limit")
        );
        assert!(params("10", Some("1"), Some("1")).page(100).is_err());
        assert_eq!(
            PageParams::default().page(100).unwrap(),
            Page {
                limit: 100,
                offset: 0
            }
        );
    }

    #[test]
    fn address_filters_are_addresses_or_networks() {
        assert!(matches!(
            parse_address_filter("ip", "10.0.0.1").unwrap(),
            AddressFilter::Address(_)
        ));
        assert_eq!(
            parse_address_filter("ip", "10.0.0.9/24").unwrap(),
            AddressFilter::Network("10.0.0.0/24".parse().unwrap())
        );
        assert!(parse_address_filter("ip", "10.0.0.300").is_err());
    }
}
