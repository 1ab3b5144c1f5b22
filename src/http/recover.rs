//! The last step of the route table: warp's own rejections (no route, body
//! too large, a bad method, ...) and the errors handlers raised as
//! rejections, answered in the one JSON error shape.

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Rejection;

use super::error::ApiError;

/// Turn a rejection into the JSON error shape.
pub async fn recover(err: Rejection) -> Result<Response, Infallible> {
    let e = if err.is_not_found() {
        ApiError::NotFound("no such endpoint".into())
    } else if let Some(api) = err.find::<ApiError>() {
        return Ok(api.clone().into_response());
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge("the body is larger than the limit".into())
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::BadRequest("send a Content-Length header with the body".into())
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        let mut res = ApiError::BadRequest("this method is not allowed on this path".into()).into_response();
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(res);
    } else if err.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::BadRequest("send the body as JSON".into())
    } else if err.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::BadRequest("the query string is malformed".into())
    } else if err.find::<warp::reject::MissingHeader>().is_some() || err.find::<warp::reject::InvalidHeader>().is_some() {
        ApiError::BadRequest("a required header is missing or malformed".into())
    } else {
        tracing::debug!(?err, "unhandled rejection");
        ApiError::BadRequest("the request could not be understood".into())
    };
    Ok(e.into_response())
}
