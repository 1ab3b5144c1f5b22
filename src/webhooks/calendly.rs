//! `POST /api/calendly/webhook` (to be built: issue 5).

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::server::App;

pub fn routes(_app: App) -> BoxedFilter<(Response,)> {
    warp::any().and_then(|| async { Err::<Response, _>(warp::reject::not_found()) }).boxed()
}
