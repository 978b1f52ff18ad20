//! `GET /api/v1/summaries`: requests the filters could not keep as records, counted per client,
//! host, status class, decision and minute.

use super::AppState;
use super::model::{ErrorBody, SummariesPage, SummariesParams};
use crate::error::Error;
use crate::store::summaries::SummaryQuery;
use axum::Json;
use axum::extract::{Query, State};
use std::collections::HashMap;

/// Record summaries matching every filter given, newest minute first, then most requests.
#[utoipa::path(
    get,
    path = "/api/v1/summaries",
    operation_id = "summaries.query",
    tag = "records",
    params(SummariesParams),
    responses(
        (status = 200, description = "The summaries", body = SummariesPage),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn summaries(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SummariesPage>, Error> {
    let q = SummaryQuery::from_params(&params, s.max_query_limit)?;
    let summaries = s.store.query_summaries(q).await?;
    Ok(Json(SummariesPage { summaries }))
}
