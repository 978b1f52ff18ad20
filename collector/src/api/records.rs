//! `GET /api/v1/records`: stored access records, newest first, a page at a time.

use super::AppState;
use super::model::{ErrorBody, RecordsPage, RecordsParams};
use crate::error::Error;
use crate::store::query::RecordQuery;
use axum::Json;
use axum::extract::{Query, State};
use std::collections::HashMap;

/// Stored access records matching every filter given, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/records",
    operation_id = "records.query",
    tag = "records",
    params(RecordsParams),
    responses(
        (status = 200, description = "One page of records", body = RecordsPage),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn records(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<RecordsPage>, Error> {
    let q = RecordQuery::from_params(&params, s.max_query_limit)?;
    let (records, next) = s.store.query_page(q).await?;
    Ok(Json(RecordsPage {
        records,
        next_cursor: next.map(|c| c.to_string()),
    }))
}
