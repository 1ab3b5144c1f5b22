//! Inbound webhooks: Calendly deliveries and Google Calendar push notifications.

pub mod calendly;
pub mod google;

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::server::App;

/// Every webhook and webhook-status route.
pub fn routes(app: App) -> BoxedFilter<(Response,)> {
    calendly::routes(app.clone()).or(google::routes(app)).unify().boxed()
}
